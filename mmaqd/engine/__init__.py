"""mmengine-facing training utilities, registered into mmdet's registries on import."""
from .checkpoint_compat import allow_mmengine_checkpoints
from .hooks import BNStatsHook, PercentileCalibrationHook, QuantizerInitHook  # noqa: F401  (registers them)

allow_mmengine_checkpoints()
