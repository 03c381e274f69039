# Transfer strategy `feature_transfer`: the detector is wrapped in
# FeatureTransferDetector. A frozen pretrained teacher backbone (eval mode, no
# gradient, not in the optimizer, not in checkpoints) runs on each training batch;
# 1x1 conv adapters map the student's backbone features at `levels` to the teacher's
# channels, and loss_feat_transfer = loss_weight * mean over levels of
#   'normalized_mse': mean((A(S) - T)^2) / mean(T^2)   (scale-free; 1 for A(S) = 0)
#   'mse':            mean((A(S) - T)^2)
# is added to the detector's losses. The student starts from scratch (default) or from
# the same pretrained weights.
#
#   cfg = apply_transfer(base_cfg, 'feature_transfer', checkpoint=CKPT, levels=[2, 3])
transfer = dict(
    type='feature_transfer',
    levels=None,                 # positions in the backbone's output tuple; None = all
    loss_weight=1.0,
    loss_type='normalized_mse',  # or 'mse'
    student_init='scratch',      # or 'pretrained' (finetune defaults)
    teacher=None,                # teacher backbone cfg; None = the base's backbone
    prefix=None,                 # key prefix of the backbone in the checkpoint
)
# Static part, merged as is: mmdet's fine-tuning learning rate for batch 16. A base tuned
# for training from scratch may use more (the tiny detectors' 0.06), at which a detector
# started from pretrained weights diverges (measured: loss_cls ~40, AP 0.000 after 8
# epochs; 0.02: AP 0.115).
optim_wrapper = dict(optimizer=dict(lr=0.02))
