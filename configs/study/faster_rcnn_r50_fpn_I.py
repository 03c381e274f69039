# I: Faster R-CNN R50-FPN fine-tuned from torchvision's ImageNet ResNet-50, mmdet's standard
# recipe (1x schedule, stem and stage 1 frozen, BatchNorm frozen, lr 0.02): the I
# baseline on COCO (configs/transfer/finetune.py written out; mmdet's base already says
# all of it). A plain mmengine config.
#   python tools/train.py configs/study/faster_rcnn_r50_fpn_I.py
_base_ = '../coco/faster_rcnn_r50_fpn_1x_coco.py'
model = dict(
    backbone=dict(
        init_cfg=dict(_delete_=True, type='Pretrained', checkpoint='torchvision://resnet50'),
        frozen_stages=1,
        norm_eval=True))
optim_wrapper = dict(optimizer=dict(lr=0.02))
# Record of the strategy (never re-applied; what trains is the keys above).
transfer = dict(
    type='finetune',
    fragment='configs/transfer/finetune.py',
    checkpoint='torchvision://resnet50',
    frozen_stages=1,
    norm_eval=True,
    prefix=None,
    lr=0.02)
