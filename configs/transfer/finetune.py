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
# Static part, merged as is: mmdet's fine-tuning learning rate for batch 16. A base tuned
# for training from scratch may use more (the tiny detectors' 0.06), at which a detector
# started from pretrained weights diverges (measured: loss_cls ~40, AP 0.000 after 8
# epochs; 0.02: AP 0.115).
optim_wrapper = dict(optimizer=dict(lr=0.02))
