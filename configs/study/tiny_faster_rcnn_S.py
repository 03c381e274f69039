# S: the tiny Faster R-CNN from scratch with mmdet's scratch recipe (configs/transfer/
# scratch.py written out: GroupNorm in backbone and FPN, nothing frozen, no weight decay
# on norms) and a 2x longer schedule than I (32 epochs, LR steps at 24 and 30). The box
# head stays the base's 2fc head (the recipe's 4conv1fc head would be ~10x the MACs of
# this tiny detector), so I and S differ only in initialisation and norm. A plain
# mmengine config.
#   python tools/train.py configs/study/tiny_faster_rcnn_S.py
_base_ = '../tiny_faster_rcnn_synth.py'
model = dict(
    backbone=dict(
        norm_cfg=dict(_delete_=True, type='FlexGN', num_groups=32, requires_grad=True),
        init_cfg=None,
        frozen_stages=-1,
        norm_eval=False,
        zero_init_residual=False),
    neck=dict(norm_cfg=dict(type='FlexGN', num_groups=32, requires_grad=True)))
optim_wrapper = dict(paramwise_cfg=dict(norm_decay_mult=0.0))
train_cfg = dict(max_epochs=32, val_interval=32)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', begin=0, end=32, by_epoch=True, milestones=[24, 30], gamma=0.1),
]
# Record of the strategy (never re-applied). Its schedule rule: a tool that sets the
# length (tools/study_pretraining.py --epochs N) trains S for schedule_factor x N epochs.
transfer = dict(
    type='scratch',
    fragment='configs/transfer/scratch.py',
    checkpoint=None,
    norm='FlexGN',
    num_groups=32,
    gn_head=False,
    schedule_factor=2.0)
