# S: Mask R-CNN R50-FPN from scratch with mmdet's scratch recipe (configs/scratch/,
# configs/transfer/scratch.py written out): GN in backbone, FPN and heads (4conv1fc box
# head, the mask head too), nothing frozen, no weight decay on norms, 6x schedule (72 epochs, LR steps at
# 48 and 66; the 500-iteration warm-up unchanged). A plain mmengine config.
#   python tools/train.py configs/study/mask_rcnn_r50_fpn_S.py
_base_ = '../coco/mask_rcnn_r50_fpn_1x_coco.py'
model = dict(
    backbone=dict(
        norm_cfg=dict(_delete_=True, type='GN', num_groups=32, requires_grad=True),
        init_cfg=None,
        frozen_stages=-1,
        norm_eval=False,
        zero_init_residual=False),
    neck=dict(norm_cfg=dict(type='GN', num_groups=32, requires_grad=True)),
    roi_head=dict(
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead',
            conv_out_channels=256,
            norm_cfg=dict(type='GN', num_groups=32, requires_grad=True)),
        mask_head=dict(norm_cfg=dict(type='GN', num_groups=32, requires_grad=True))))
optim_wrapper = dict(paramwise_cfg=dict(norm_decay_mult=0.0))
train_cfg = dict(max_epochs=72)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=72, by_epoch=True, milestones=[48, 66], gamma=0.1),
]
# Record of the strategy (never re-applied); schedule rule: --epochs N trains 6 x N.
transfer = dict(
    type='scratch',
    fragment='configs/transfer/scratch.py',
    checkpoint=None,
    norm='GN',
    num_groups=32,
    gn_head=True,
    schedule_factor=6.0)
