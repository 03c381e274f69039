# Transfer strategy `finetune` (parameter transfer): the backbone starts from a
# pretrained checkpoint, init_cfg=dict(type='Pretrained', checkpoint=CKPT[, prefix]),
# with the stem and first stage frozen and BatchNorm statistics frozen, as in mmdet's
# standard configs. Needs a checkpoint: a path (e.g. from tools/pretrain.py) or
# torchvision://resnet50 (fetched by mmengine's loader).
#
#   cfg = apply_transfer(base_cfg, 'finetune', checkpoint='work_dirs/pretrain/backbone.pth')
transfer = dict(
    type='finetune',
    frozen_stages=1,   # stem + stages 1..frozen_stages frozen (-1: nothing)
    norm_eval=True,    # BatchNorm in eval mode (statistics frozen) while training
    prefix=None,       # e.g. 'backbone.' to take the backbone out of a detector checkpoint
)
