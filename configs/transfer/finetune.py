# Transfer strategy `finetune` (parameter transfer), written in full on the tiny detector:
# the backbone starts from a pretrained checkpoint (init_cfg Pretrained), the stem and
# first stage frozen, BatchNorm statistics frozen, as in mmdet's standard configs, at the
# fine-tuning lr. A plain mmengine config: MMDetection's tools/train.py trains it as
# nasdet's does. The checkpoint (here the demo's, from tools/pretrain.py; or
# torchvision://resnet50) must exist: a missing file stops the run at initialisation.
#   python tools/train.py configs/transfer/finetune.py
# On another detector, nasdet writes the same keys (and checks the checkpoint fits):
#   cfg = apply_transfer(base_cfg, 'finetune', checkpoint=CKPT, frozen_stages=2)
_base_ = '../tiny_faster_rcnn_synth.py'
model = dict(
    backbone=dict(
        init_cfg=dict(_delete_=True, type='Pretrained',
                      checkpoint='work_dirs/pretrain/backbone.pth'),
        frozen_stages=1,   # stem + stages 1..frozen_stages frozen (-1: nothing)
        norm_eval=True))   # BatchNorm in eval mode (statistics frozen) while training
# mmdet's fine-tuning lr for batch 16. A base tuned for training from scratch may use
# more (the tiny detectors' 0.06), at which a detector started from pretrained weights
# diverges (measured: loss_cls ~40, AP 0.000 after 8 epochs; 0.02: AP 0.115).
optim_wrapper = dict(optimizer=dict(lr=0.02))
# Record of the strategy (never re-applied): its parameters, as apply_transfer takes
# them for another base, and the name tables show. What trains is the keys above.
transfer = dict(
    type='finetune',
    fragment='configs/transfer/finetune.py',
    checkpoint='work_dirs/pretrain/backbone.pth',
    frozen_stages=1,
    norm_eval=True,
    prefix=None,       # e.g. 'backbone.' to take the backbone out of a detector checkpoint
    lr=0.02)
