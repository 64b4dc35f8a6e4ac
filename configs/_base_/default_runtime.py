# mmdet's runtime plus the plugin import: every mmaqd config inherits this, so mmdet's own
# tools/train.py and tools/test.py find the plugin's modules with no path hacks.
# All mmaqd schedules are iteration based: checkpoints and logs count iterations.
_base_ = 'mmdet::_base_/default_runtime.py'

custom_imports = dict(imports=['mmaqd'], allow_failed_imports=False)

# strict_load: a load_from / --resume checkpoint that is unreadable or leaves a model key unloaded stops the run,
# naming the file or the keys (mmaqd.engine.strict_load); `load_from_strict = False` makes the keys a warning.
# divergence_guard: the first non-finite loss, gradient, parameter or quantizer range (alpha not > 0) stops the run
# before that iteration's checkpoint is written, naming the tensor (mmaqd.engine.hooks.DivergenceGuardHook). A
# default hook, not a custom one, so that configs that set their own custom_hooks keep it.
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=10000, max_keep_ckpts=3),
                     strict_load=dict(type='StrictLoadHook'),
                     divergence_guard=dict(type='DivergenceGuardHook'))
load_from_strict = True
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)
