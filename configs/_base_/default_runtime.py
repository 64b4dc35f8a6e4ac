# mmdet's runtime plus the plugin import: every mmaqd config inherits this, so mmdet's own
# tools/train.py and tools/test.py find the plugin's modules with no path hacks.
# All mmaqd schedules are iteration based: checkpoints and logs count iterations.
_base_ = 'mmdet::_base_/default_runtime.py'

custom_imports = dict(imports=['mmaqd'], allow_failed_imports=False)

default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=10000, max_keep_ckpts=3))
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)
