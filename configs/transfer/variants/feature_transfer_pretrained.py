# A fragment file of one's own: feature transfer on top of fine-tuning. The student
# starts from the same pretrained backbone as the frozen teacher (finetune's defaults:
# stem and stage 1 frozen, BatchNorm statistics frozen) and learns to keep reproducing
# the teacher's features while it adapts to detection; fine-tuning lr.
#   python tools/compare_transfer.py --base CONFIG finetune \
#       configs/transfer/variants/feature_transfer_pretrained.py --checkpoint CKPT
transfer = dict(type='feature_transfer', student_init='pretrained')
optim_wrapper = dict(optimizer=dict(lr=0.02))
