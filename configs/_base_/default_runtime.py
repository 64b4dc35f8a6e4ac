# mmdet's runtime plus the plugin import: every mmaqd config inherits this, so mmdet's own
# tools/train.py and tools/test.py find the plugin's modules with no path hacks.
_base_ = 'mmdet::_base_/default_runtime.py'

custom_imports = dict(imports=['mmaqd'], allow_failed_imports=False)
