# Transfer strategy `l2sp`, written in full on the tiny detector: fine-tuning with L2-SP
# (Li, Grandvalet, Davoine, ICML 2018, "Explicit Inductive Bias for Transfer Learning
# with Convolutional Networks"):
#   Omega(w) = alpha/2 ||w_S - w_S^0||^2 + beta/2 ||w_new||^2
# w_S: the backbone (pretrained, reference w_S^0 = its weights after loading);
# w_new: neck and heads. As in the paper it replaces weight decay: the backbone gets
# decay_mult=0 and the registered model L2SPDetector adds loss_l2sp (0 at the start);
# the new layers keep SGD weight decay, which is the beta term (beta=None keeps the
# base config's weight_decay). A plain mmengine config (nasdet.models registers the
# wrapper through custom_imports).
#   python tools/train.py configs/transfer/l2sp.py
#   cfg = apply_transfer(base_cfg, 'l2sp', checkpoint=CKPT, alpha=0.1)   # on another base
_base_ = './finetune.py'
model = dict(
    _delete_=True,
    type='L2SPDetector',
    detector={{_base_.model}},   # finetune.py's detector: pretrained backbone, stage 1 frozen
    alpha=0.01,                  # pull towards the pretrained backbone
    source='backbone',
    data_preprocessor={{_base_.model.data_preprocessor}})
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'backbone.': dict(decay_mult=0.0)}))
# Record of the strategy (never re-applied); what trains is the keys above.
transfer = dict(
    _delete_=True,
    type='l2sp',
    fragment='configs/transfer/l2sp.py',
    checkpoint='work_dirs/pretrain/backbone.pth',
    alpha=0.01,
    beta=None,         # weight decay of the new layers (None: the base's)
    frozen_stages=1,
    norm_eval=True,
    prefix=None,
    lr=0.02)
