# A strategy variant of one's own, written in full: feature transfer on top of
# fine-tuning. The student starts from the same pretrained backbone as the frozen
# teacher (finetune's defaults: stem and stage 1 frozen, BatchNorm statistics frozen)
# and learns to keep reproducing the teacher's features while it adapts to detection;
# fine-tuning lr. Trains as it stands, and as a strategy on another base:
#   python tools/compare_transfer.py --base CONFIG finetune \
#       configs/transfer/variants/feature_transfer_pretrained.py --checkpoint CKPT
_base_ = '../feature_transfer.py'
model = dict(
    detector=dict(
        backbone=dict(
            init_cfg=dict(_delete_=True, type='Pretrained',
                          checkpoint='work_dirs/pretrain/backbone.pth'),
            frozen_stages=1,
            norm_eval=True)))
optim_wrapper = dict(optimizer=dict(lr=0.02))
transfer = dict(
    fragment='configs/transfer/variants/feature_transfer_pretrained.py',
    student_init='pretrained',
    lr=0.02)
