# Transfer strategy `reinit_top`: load the pretrained backbone (as `finetune`), then
# re-initialise its top k stages (Kaiming convs, unit norms, reset BatchNorm statistics)
# through ReinitDetector. The re-initialised BatchNorms train in batch-statistics mode;
# the pretrained ones keep norm_eval.
#
#   cfg = apply_transfer(base_cfg, 'reinit_top', checkpoint=CKPT, k=2)
transfer = dict(
    type='reinit_top',
    k=1,               # top stages re-initialised (1: layer4)
    frozen_stages=1,   # must leave the top k stages trainable
    norm_eval=True,
    prefix=None,
)
