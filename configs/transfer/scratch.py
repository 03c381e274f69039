# Transfer strategy `scratch`: train from random initialisation with mmdet's scratch
# recipe (mmdet configs/scratch/, He et al., "Rethinking ImageNet Pre-training"):
# GroupNorm in the backbone, the FPN and the box head (two-stage: Shared4Conv1FCBBoxHead;
# single-stage: the head's conv towers), nothing frozen, norm_eval=False, no pretrained
# weights, no weight decay on norm layers, and a schedule `schedule_factor` times
# longer (mmdet: 6x; epoch-based milestones scale with it, iteration warm-ups do not).
#
#   from nasdet.train.transfer import apply_transfer
#   cfg = apply_transfer(base_cfg, 'scratch', schedule_factor=1)
#   tools/compare_transfer.py --base CONFIG scratch:schedule_factor=1 finetune ...
transfer = dict(
    type='scratch',
    norm='FlexGN',          # 'FlexGN' | 'GN' | 'SyncBN' | 'BN'; FlexGN == GN on multiples of 32
    num_groups=32,          # GroupNorm groups (an upper bound for FlexGN)
    gn_head=True,           # norm (and mmdet's 4conv1fc box head) in the detection head
    schedule_factor=6.0,    # max_epochs multiplier
)
# Static part, merged as is: no weight decay on norm layers (mmdet's scratch configs).
optim_wrapper = dict(paramwise_cfg=dict(norm_decay_mult=0.0))
