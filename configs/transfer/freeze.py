# Transfer strategy `freeze`: `finetune` with the stem and the first k stages frozen
# (frozen_stages=k). k=4 makes a ResNet backbone a fixed pretrained feature extractor;
# the neck and heads train.
#
#   cfg = apply_transfer(base_cfg, 'freeze', checkpoint=CKPT, k=2)
transfer = dict(
    type='freeze',
    k=4,               # frozen stages (0: stem only)
    norm_eval=True,
    prefix=None,
)
# Static part, merged as is: mmdet's fine-tuning learning rate for batch 16. A base tuned
# for training from scratch may use more (the tiny detectors' 0.06), at which a detector
# started from pretrained weights diverges (measured: loss_cls ~40, AP 0.000 after 8
# epochs; 0.02: AP 0.115).
optim_wrapper = dict(optimizer=dict(lr=0.02))
