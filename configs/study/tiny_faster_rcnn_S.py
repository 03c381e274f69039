# S: the tiny Faster R-CNN from scratch with mmdet's scratch recipe (GroupNorm in backbone
# and FPN, nothing frozen, no weight decay on norms) and a 2x longer schedule than I.
# The box head stays the base's 2fc head (the recipe's 4conv1fc head would be ~10x the
# MACs of this tiny detector), so I and S differ only in initialisation and norm.
#   python tools/train.py configs/study/tiny_faster_rcnn_S.py
_base_ = '../tiny_faster_rcnn_synth.py'
transfer = dict(type='scratch', norm='FlexGN', gn_head=False, schedule_factor=2.0)
