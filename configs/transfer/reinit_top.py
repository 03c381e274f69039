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
# Static part, merged as is: mmdet's fine-tuning learning rate for batch 16. A base tuned
# for training from scratch may use more (the tiny detectors' 0.06), at which a detector
# started from pretrained weights diverges (measured: loss_cls ~40, AP 0.000 after 8
# epochs; 0.02: AP 0.115).
optim_wrapper = dict(optimizer=dict(lr=0.02))
