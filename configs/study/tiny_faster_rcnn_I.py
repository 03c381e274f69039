# I: the tiny Faster R-CNN fine-tuned from its backbone pre-trained on the synthetic
# classification source task (tools/pretrain.py configs/tiny_faster_rcnn_synth.py writes
# the checkpoint), with mmdet's standard fine-tuning: stem and stage 1 frozen, BatchNorm
# statistics frozen, lr 0.02 (the fragment configs/transfer/finetune.py; the base's 0.06
# is a from-scratch lr). Applied when the config is loaded (nasdet.train.load_config).
#   python tools/train.py configs/study/tiny_faster_rcnn_I.py
_base_ = '../tiny_faster_rcnn_synth.py'
transfer = dict(
    type='finetune',
    checkpoint='work_dirs/pretrain/backbone.pth',
    frozen_stages=1,
    norm_eval=True,
)
