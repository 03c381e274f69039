# Real-scale Mask R-CNN R50-FPN on COCO (mmdet's bases, nasdet modules registered).
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['nasdet.models', 'nasdet.hooks'], allow_failed_imports=False)
