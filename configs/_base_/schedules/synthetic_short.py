# A short CPU-friendly schedule for the synthetic data (512 images, batch 16: 32
# iterations an epoch): linear warm-up, then two steps.
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=16, val_interval=16)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', begin=0, end=16, by_epoch=True, milestones=[12, 15], gamma=0.1),
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.06, momentum=0.9, weight_decay=1e-4),
    clip_grad=dict(max_norm=10.0, norm_type=2))
auto_scale_lr = dict(enable=False, base_batch_size=16)
