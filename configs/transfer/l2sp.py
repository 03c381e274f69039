# Transfer strategy `l2sp`: fine-tuning with L2-SP (Li, Grandvalet, Davoine, ICML 2018,
# "Explicit Inductive Bias for Transfer Learning with Convolutional Networks"):
#   Omega(w) = alpha/2 ||w_S - w_S^0||^2 + beta/2 ||w_new||^2
# w_S: the backbone (pretrained, reference w_S^0 = its weights after loading);
# w_new: neck and heads. As in the paper it replaces weight decay: the backbone gets
# decay_mult=0 and the model adds loss_l2sp = alpha/2 ||w_S - w_S^0||^2 (0 at the
# start); the new layers keep SGD weight decay, which is the beta term (beta=None
# keeps the base config's weight_decay).
#
#   cfg = apply_transfer(base_cfg, 'l2sp', checkpoint=CKPT, alpha=0.1)
transfer = dict(
    type='l2sp',
    alpha=0.01,        # pull towards the pretrained backbone
    beta=None,         # weight decay of the new layers (None: the base's)
    frozen_stages=1,
    norm_eval=True,
    prefix=None,
)
# Static part, merged as is: mmdet's fine-tuning learning rate for batch 16. A base tuned
# for training from scratch may use more (the tiny detectors' 0.06), at which a detector
# started from pretrained weights diverges (measured: loss_cls ~40, AP 0.000 after 8
# epochs; 0.02: AP 0.115).
optim_wrapper = dict(optimizer=dict(lr=0.02))
