# Tiny RetinaNet trained from scratch on synthetic shapes.
_base_ = [
    '_base_/models/tiny_retinanet.py',
    '_base_/datasets/synthetic_det.py',
    '_base_/schedules/synthetic_short.py',
    '_base_/default_runtime.py',
]
optim_wrapper = dict(optimizer=dict(lr=0.01))
