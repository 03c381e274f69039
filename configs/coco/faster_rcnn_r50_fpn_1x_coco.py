# Real-scale Faster R-CNN R50-FPN on COCO for users who have it (data/coco/ as in
# mmdet). Everything comes from mmdet's own bases; nasdet adds its modules and hooks.
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['nasdet.models', 'nasdet.hooks'], allow_failed_imports=False)
