# Transfer strategy `reinit_top`, written in full on the tiny detector: load the
# pretrained backbone (as `finetune`), then re-initialise its top k stages (Kaiming
# convs, unit norms, reset BatchNorm statistics) through the registered model
# ReinitDetector. The re-initialised BatchNorms train in batch-statistics mode; the
# pretrained ones keep norm_eval. A plain mmengine config.
#   python tools/train.py configs/transfer/reinit_top.py
#   cfg = apply_transfer(base_cfg, 'reinit_top', checkpoint=CKPT, k=2)   # on another base
_base_ = './finetune.py'
model = dict(
    _delete_=True,
    type='ReinitDetector',
    detector={{_base_.model}},   # finetune.py's detector (frozen_stages must leave k trainable)
    top_stages=1,                # k: top stages re-initialised (1: layer4)
    data_preprocessor={{_base_.model.data_preprocessor}})
# Record of the strategy (never re-applied); what trains is the keys above.
transfer = dict(
    _delete_=True,
    type='reinit_top',
    fragment='configs/transfer/reinit_top.py',
    checkpoint='work_dirs/pretrain/backbone.pth',
    k=1,
    frozen_stages=1,
    norm_eval=True,
    prefix=None,
    lr=0.02)
