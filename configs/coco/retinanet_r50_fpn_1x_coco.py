# Real-scale RetinaNet R50-FPN on COCO (mmdet's bases, nasdet modules registered).
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['nasdet.models', 'nasdet.hooks'], allow_failed_imports=False)
