# The CPU schedule of the generated benchmark (full-precision training from scratch): iteration based, batch 8,
# AdamW (it trains an un-pretrained detector several times faster than SGD in this budget), linear warm-up,
# lr x0.1 at 80% of the iterations.
train_cfg = dict(type='IterBasedTrainLoop', max_iters=2300, val_interval=2300)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', begin=0, end=2300, by_epoch=False, milestones=[1840], gamma=0.1)
]

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.002, weight_decay=0.05),
    clip_grad=dict(max_norm=35, norm_type=2))
auto_scale_lr = dict(enable=False, base_batch_size=8)
