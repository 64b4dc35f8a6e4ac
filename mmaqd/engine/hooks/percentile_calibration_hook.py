"""FQN's percentile calibration of activation ranges before fine-tuning (FQN, Li et al., CVPR 2019,
sections 3.4.1 and 4).

"We randomly sample n_cal batches of training data to build a small calibration set, then evaluate a trained
detector on the calibration set and record each layer's activation values between the gamma'th and
(1 - gamma)'th percentiles"; n_cal = 20, gamma = 0.999, the ranges then stay fixed. The hook calls
``start_calibration()`` on every enabled, not yet initialised quantizer that has it
(:class:`~mmaqd.quantization.quantizers.FQNAffine` activation quantizers: they pass activations through
unquantized and record per-batch percentiles), runs ``num_batches`` training batches (eval mode, no gradients,
BN statistics untouched; :func:`~.utils.run_batches`; the training sampler supplies the random sample) and calls
``finish_calibration()``, which sets each range to the mean of its per-batch percentiles (averaged over ranks)
and marks the quantizer initialised.

The result lives in buffers (``lb``, ``ub``, ``initialized``) and so in every checkpoint: a resumed run, or one
loaded from a calibrated checkpoint, is not recalibrated. Usage::

    custom_hooks = [dict(type='PercentileCalibrationHook', num_batches=20)]
"""
from typing import Dict, List

from mmdet.registry import HOOKS
from torch import nn

from mmaqd.quantization.mode import quantizers
from mmaqd.quantization.quantizers.base import BaseQuantizer

from .utils import BatchDrawingHook, draw_batches, unwrap_model


def calibration_targets(model: nn.Module) -> Dict[str, BaseQuantizer]:
    """Enabled quantizers of ``model`` with ``start_calibration`` whose data-driven range is not set yet."""
    return {name: q for name, q in quantizers(model)
            if callable(getattr(q, 'start_calibration', None)) and q.data_init and q.enabled
            and not bool(q.initialized)}


@HOOKS.register_module()
class PercentileCalibrationHook(BatchDrawingHook):
    """Calibrate uninitialised calibratable quantizers on ``num_batches`` training batches in ``before_train``.

    Args:
        num_batches: n_cal, the number of calibration batches (FQN section 3.4.1: 20).
        forward_mode: ``'tensor'`` (network forward) or ``'loss'`` (also the loss path).

    Priority ``ABOVE_NORMAL``: runs before :class:`~.quantizer_init_hook.QuantizerInitHook`, which would
    otherwise set these ranges from one batch. Quantizers already initialised keep their ranges (and quantize
    during the calibration batches). A calibration quantizer that no batch reached is an error.
    """

    priority = 'ABOVE_NORMAL'

    def __init__(self, num_batches: int = 20, forward_mode: str = 'tensor') -> None:
        super().__init__(num_batches, forward_mode)

    def before_train(self, runner) -> None:
        model = unwrap_model(runner.model)
        targets = calibration_targets(model)
        if not targets:
            self.skip(runner, 'no quantizer needs calibration (all calibrated: resumed or loaded from a calibrated '
                      'checkpoint); skipping')
            return
        for q in targets.values():
            q.start_calibration()
        ran = draw_batches(runner, self.num_batches, self.forward_mode)
        failed: List[str] = []
        for name, q in targets.items():
            try:
                q.finish_calibration()
            except RuntimeError as err:  # FQNAffine: no forward reached it
                failed.append(f'{name} ({err})')
        if failed:
            raise RuntimeError(f'PercentileCalibrationHook: {len(failed)} quantizer(s) saw no calibration batch '
                               f"with forward_mode='{self.forward_mode}' ({ran} batch(es) ran); try "
                               f"forward_mode='loss' or disable them: {failed}")
        runner.logger.info(f'PercentileCalibrationHook: calibrated {len(targets)} quantizer(s) on {ran} '
                           'training batch(es) (mean of per-batch percentiles)')
        if ran < self.num_batches:
            runner.logger.warning(f'PercentileCalibrationHook: the training dataloader ended after {ran} of '
                                  f'{self.num_batches} calibration batches')
