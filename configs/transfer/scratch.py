# Transfer strategy `scratch`, written in full on the tiny detector: train from random
# initialisation with mmdet's scratch recipe (mmdet configs/scratch/, He et al.,
# "Rethinking ImageNet Pre-training"): GroupNorm in the backbone, the FPN and the box
# head (Shared4Conv1FCBBoxHead), nothing frozen, norm_eval=False, no pretrained weights,
# (FlexGN: GroupNorm, == GN on widths that are multiples of 32) no weight decay on
# norm layers, and a schedule `schedule_factor` times longer (mmdet:
# 6x; epoch-based milestones scale with it, iteration warm-ups do not). A plain mmengine
# config (FlexGN is registered by nasdet.models through custom_imports).
#   python tools/train.py configs/transfer/scratch.py
#   cfg = apply_transfer(base_cfg, 'scratch', schedule_factor=1)   # on another base
#   tools/compare_transfer.py --base CONFIG scratch:schedule_factor=1 finetune ...
_base_ = '../tiny_faster_rcnn_synth.py'
model = dict(
    backbone=dict(
        norm_cfg=dict(_delete_=True, type='FlexGN', num_groups=32, requires_grad=True),
        init_cfg=None,
        frozen_stages=-1,
        norm_eval=False,
        zero_init_residual=False),
    neck=dict(norm_cfg=dict(type='FlexGN', num_groups=32, requires_grad=True)),
    roi_head=dict(
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead',  # mmdet's 4conv1fc head with the norm
            conv_out_channels=64,           # the head's in_channels
            norm_cfg=dict(type='FlexGN', num_groups=32, requires_grad=True))))
optim_wrapper = dict(paramwise_cfg=dict(norm_decay_mult=0.0))
# 6x the base's 16 epochs: milestones [12, 15] -> [72, 90]; the warm-up stays 100 iterations.
train_cfg = dict(max_epochs=96, val_interval=96)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', begin=0, end=96, by_epoch=True, milestones=[72, 90], gamma=0.1),
]
# Record of the strategy (never re-applied): its parameters for another base, and its
# schedule rule: a tool that sets the length (a search stage's epochs, --epochs) asks
# for base epochs and trains schedule_factor times as many.
transfer = dict(
    type='scratch',
    fragment='configs/transfer/scratch.py',
    checkpoint=None,
    norm='FlexGN',          # 'FlexGN' | 'GN' | 'SyncBN' | 'BN'
    num_groups=32,          # GroupNorm groups (an upper bound for FlexGN)
    gn_head=True,           # norm (and mmdet's 4conv1fc box head) in the detection head
    schedule_factor=6.0)    # length multiplier
