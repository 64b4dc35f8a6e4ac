# The one fine-tuning schedule of every quantized variant on the generated benchmark (configs/aqd/*_synth.py and
# configs/aqd/ablations/*_synth.py), defined once and used by both benchmark anchors. It is a single key so that
# it can sit beside a full config among `_base_` (mmengine refuses duplicate keys among bases); each anchor copies
# its entries into train_cfg / param_scheduler / optim_wrapper.
# AdamW (as the FP benchmark) at lr 2e-4, the FP run's final lr, from the FP checkpoint; quantizer ranges learn
# at 10x that lr and are not decayed; linear warm-up over 50 iterations, x0.1 at 80%. 350 iterations so that
# five fine-tunes plus the two FP trainings of tools/benchmark/accuracy.py's default set fit in about an hour
# on 2 CPU cores.
finetune_iters = 350
finetune_schedule = dict(
    train_cfg=dict(type='IterBasedTrainLoop', max_iters=finetune_iters, val_interval=finetune_iters),
    param_scheduler=[
        dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=50),
        dict(type='MultiStepLR', begin=0, end=finetune_iters, by_epoch=False,
             milestones=[int(finetune_iters * 0.8)], gamma=0.1)
    ],
    optim_wrapper=dict(
        constructor='GroupedOptimWrapperConstructor',  # two param groups, not one per parameter (mmaqd.engine.optim)
        optimizer=dict(type='AdamW', lr=0.0002, weight_decay=0.05),
        paramwise_cfg=dict(custom_keys={'_quantizer': dict(lr_mult=10., decay_mult=0.)})))
