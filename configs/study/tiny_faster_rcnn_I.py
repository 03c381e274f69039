# I: the tiny Faster R-CNN fine-tuned from its backbone pre-trained on the synthetic
# classification source task with the default recipe (24 epochs, val top-1 0.88):
#   python tools/pretrain.py configs/tiny_faster_rcnn_synth.py --work-dir work_dirs/source_backbone
# (tools/study_pretraining.py pre-trains it into its own work dir when this file is
# missing). Its own path, not the demo's work_dirs/pretrain/, whose 4-epoch stand-in
# sits near chance. mmdet's standard fine-tuning: stem and stage 1 frozen, BatchNorm
# statistics frozen, lr 0.02 (the fragment configs/transfer/finetune.py; the base's 0.06
# is a from-scratch lr). Applied when the config is loaded (nasdet.train.load_config).
#   python tools/train.py configs/study/tiny_faster_rcnn_I.py
_base_ = '../tiny_faster_rcnn_synth.py'
transfer = dict(
    type='finetune',
    checkpoint='work_dirs/source_backbone/backbone.pth',
    frozen_stages=1,
    norm_eval=True,
)
