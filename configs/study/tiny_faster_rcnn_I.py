# I: the tiny Faster R-CNN fine-tuned from its backbone pre-trained on the synthetic
# classification source task with the default recipe (24 epochs, val top-1 0.88):
#   python tools/pretrain.py configs/tiny_faster_rcnn_synth.py --work-dir work_dirs/source_backbone
# (tools/study_pretraining.py pre-trains it into its own work dir when this file is
# missing). Its own path, not the demo's work_dirs/pretrain/, whose 4-epoch stand-in
# sits near chance. mmdet's standard fine-tuning (configs/transfer/finetune.py written
# out): stem and stage 1 frozen, BatchNorm statistics frozen, lr 0.02 (the base's 0.06 is
# a from-scratch lr). A plain mmengine config: MMDetection's tools/train.py trains it as
# nasdet's does; without the checkpoint the run stops at initialisation.
#   python tools/train.py configs/study/tiny_faster_rcnn_I.py
_base_ = '../tiny_faster_rcnn_synth.py'
model = dict(
    backbone=dict(
        init_cfg=dict(_delete_=True, type='Pretrained',
                      checkpoint='work_dirs/source_backbone/backbone.pth'),
        frozen_stages=1,
        norm_eval=True))
optim_wrapper = dict(optimizer=dict(lr=0.02))
# Record of the strategy (never re-applied; what trains is the keys above).
transfer = dict(
    type='finetune',
    fragment='configs/transfer/finetune.py',
    checkpoint='work_dirs/source_backbone/backbone.pth',
    frozen_stages=1,
    norm_eval=True,
    prefix=None,
    lr=0.02)
