# The AQD paper's COCO schedule (arXiv 2007.06919v1, section 4.3): 90k iterations at batch 16 (8 GPUs x 2 images), SGD
# with momentum 0.9, lr 0.01 divided by 10 at 60k and 80k, weight decay 1e-4.
train_cfg = dict(type='IterBasedTrainLoop', max_iters=90000, val_interval=10000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=90000, by_epoch=False, milestones=[60000, 80000], gamma=0.1)
]

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001),
    clip_grad=dict(max_norm=35, norm_type=2))


# base_batch_size = (8 GPUs) x (2 images per GPU); enable with tools/train.py --auto-scale-lr
auto_scale_lr = dict(enable=False, base_batch_size=16)
