# I: Mask R-CNN R50-FPN fine-tuned from torchvision's ImageNet ResNet-50, mmdet's standard
# recipe (1x schedule, stem and stage 1 frozen, BatchNorm frozen): the I baseline on COCO.
#   python tools/train.py configs/study/mask_rcnn_r50_fpn_I.py
_base_ = '../coco/mask_rcnn_r50_fpn_1x_coco.py'
transfer = dict(
    type='finetune',
    checkpoint='torchvision://resnet50',
    frozen_stages=1,
    norm_eval=True,
)
