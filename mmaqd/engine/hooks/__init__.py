"""mmaqd's training hooks, registered into mmdet's ``HOOKS`` on import (use them in ``custom_hooks``)."""
from .bn_stats_hook import BNStatsHook
from .freeze_bn_hook import FreezeBNHook
from .percentile_calibration_hook import PercentileCalibrationHook
from .quantizer_init_hook import QuantizerInitHook

__all__ = ['BNStatsHook', 'FreezeBNHook', 'PercentileCalibrationHook', 'QuantizerInitHook']
