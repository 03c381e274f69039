# S: Faster R-CNN R50-FPN from scratch with mmdet's scratch recipe (configs/scratch/): GN
# in backbone, FPN and heads (4conv1fc box head), nothing frozen, 6x schedule.
#   python tools/train.py configs/study/faster_rcnn_r50_fpn_S.py
_base_ = '../coco/faster_rcnn_r50_fpn_1x_coco.py'
transfer = dict(type='scratch', norm='GN', gn_head=True, schedule_factor=6.0)
