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
