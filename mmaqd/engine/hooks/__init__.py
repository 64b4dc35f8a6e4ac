"""mmaqd's training hooks, registered into mmdet's ``HOOKS`` on import (use them in ``custom_hooks``)."""
from .bn_stats_hook import BNStatsHook
from .divergence_guard_hook import DivergenceError, DivergenceGuardHook
from .freeze_bn_hook import FreezeBNHook
from .percentile_calibration_hook import PercentileCalibrationHook
from .quantizer_health_hook import QuantizerHealthHook
from .quantizer_init_hook import QuantizerInitHook
from .strict_load_hook import StrictLoadHook

__all__ = ['BNStatsHook', 'DivergenceError', 'DivergenceGuardHook', 'FreezeBNHook', 'PercentileCalibrationHook',
           'QuantizerHealthHook', 'QuantizerInitHook', 'StrictLoadHook']
