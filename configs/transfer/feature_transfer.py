# Transfer strategy `feature_transfer`, written in full on the tiny detector: the
# detector is wrapped in the registered model FeatureTransferDetector. A frozen
# pretrained teacher backbone (eval mode, no gradient, not in the optimizer, not in
# checkpoints) runs on each training batch; 1x1 conv adapters map the student's
# backbone features at `levels` to the teacher's channels, and
# loss_feat_transfer = loss_weight * mean over levels of
#   'normalized_mse': mean((A(S) - T)^2) / mean(T^2)   (scale-free; 1 for A(S) = 0)
#   'mse':            mean((A(S) - T)^2)
# is added to the detector's losses. The student starts from scratch (here: the base's
# from-scratch backbone, and its lr 0.06; measured on the tiny detector, 8 epochs: lr
# 0.02 gave AP 0.027), or from the same pretrained weights (variants/). A plain
# mmengine config; a missing teacher checkpoint stops the run when the model is built.
#   python tools/train.py configs/transfer/feature_transfer.py
#   cfg = apply_transfer(base_cfg, 'feature_transfer', checkpoint=CKPT, levels=[2, 3])
_base_ = '../tiny_faster_rcnn_synth.py'
model = dict(
    _delete_=True,
    type='FeatureTransferDetector',
    detector={{_base_.model}},             # the student: the base detector, from scratch
    teacher={{_base_.model.backbone}},     # same architecture; its init_cfg is ignored
    teacher_checkpoint='work_dirs/pretrain/backbone.pth',
    teacher_prefix=None,
    levels=None,                 # positions in the backbone's output tuple; None = all
    loss_weight=1.0,
    loss_type='normalized_mse',  # or 'mse'
    data_preprocessor={{_base_.model.data_preprocessor}})
# Record of the strategy (never re-applied); what trains is the keys above.
transfer = dict(
    type='feature_transfer',
    fragment='configs/transfer/feature_transfer.py',
    checkpoint='work_dirs/pretrain/backbone.pth',
    levels=None,
    loss_weight=1.0,
    loss_type='normalized_mse',
    student_init='scratch',      # or 'pretrained' (finetune defaults)
    teacher=None,                # teacher backbone cfg; None = the base's backbone
    prefix=None,                 # key prefix of the backbone in the checkpoint
    lr=None)                     # None: the base's lr
