# The embedded default: tiny Faster R-CNN trained from scratch on synthetic shapes.
#   python tools/train.py configs/tiny_faster_rcnn_synth.py
_base_ = [
    '_base_/models/tiny_faster_rcnn.py',
    '_base_/datasets/synthetic_det.py',
    '_base_/schedules/synthetic_short.py',
    '_base_/default_runtime.py',
]
