"""mmengine-facing training parts: hooks and the optimizer-wrapper constructor (registered into mmdet's registries
on import) and the runtime helpers of a run (strict checkpoint loading, CPU process groups, resume checkpoints
under torch >= 2.6).

Importing this package changes nothing in mmengine: :func:`allow_mmengine_checkpoints` is an explicit call, made
by :func:`mmaqd.register_all_modules` (and so on mmdet's first registry lookup after ``import mmaqd``).
"""
from .checkpoint_compat import allow_mmengine_checkpoints  # noqa: F401
from .hooks import BNStatsHook, PercentileCalibrationHook, QuantizerInitHook  # noqa: F401  (registers them)
from .optim import GroupedOptimWrapperConstructor, merge_param_groups  # noqa: F401  (registers it)
