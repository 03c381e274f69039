# Transfer strategy `freeze`, written in full on the tiny detector: `finetune` with the
# stem and the first k stages frozen (frozen_stages=k). k=4 makes the backbone a fixed
# pretrained feature extractor; the neck and heads train. A plain mmengine config.
#   python tools/train.py configs/transfer/freeze.py
#   cfg = apply_transfer(base_cfg, 'freeze', checkpoint=CKPT, k=2)   # on another base
_base_ = '../tiny_faster_rcnn_synth.py'
model = dict(
    backbone=dict(
        init_cfg=dict(_delete_=True, type='Pretrained',
                      checkpoint='work_dirs/pretrain/backbone.pth'),
        frozen_stages=4,
        norm_eval=True))
optim_wrapper = dict(optimizer=dict(lr=0.02))  # fine-tuning lr (see finetune.py)
# Record of the strategy (never re-applied); what trains is the keys above.
transfer = dict(
    type='freeze',
    fragment='configs/transfer/freeze.py',
    checkpoint='work_dirs/pretrain/backbone.pth',
    k=4,               # frozen stages (0: stem only)
    norm_eval=True,
    prefix=None,
    lr=0.02)
