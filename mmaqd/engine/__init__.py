"""mmengine-facing training utilities, registered into mmdet's registries on import."""
from .checkpoint_compat import allow_mmengine_checkpoints
from .optim import GroupedOptimWrapperConstructor, merge_param_groups  # noqa: F401  (registers it)
from .hooks import BNStatsHook, PercentileCalibrationHook, QuantizerInitHook  # noqa: F401  (registers them)

allow_mmengine_checkpoints()
