"""Initialise data-driven quantizer ranges from training batches before the first optimizer step.

Quantizers whose ranges start from data (``data_init``: LIQ's alpha, LSQ's step size, LQ-Nets' basis, FQN's
activation range; the authors' AQD code, github.com/aim-uofa/model-quantization, starts LIQ's alpha at 1.0 or, for
some layers, at 0.8 x a running mean of max|x| over its first 10 iterations instead) initialise themselves on the first
batch they see. Without this hook that batch is the first training step, whose forward then runs with a fresh range
while the optimizer already steps. The hook runs ``num_batches`` training batches through the model first (eval mode, no
gradients, BN statistics untouched; :func:`~.utils.run_batches`), so the first step starts from initialised ranges. A
quantizer initialises once, on the first batch that reaches it; later batches only reach quantizers the first did not.

A fine-tune from a full-precision checkpoint has uninitialised quantizers (their state is absent from the
checkpoint); a resumed run, or one loaded from a quantized checkpoint, has them initialised (the ``initialized``
buffer is in the checkpoint) and the hook does nothing, except that a resumed run drops the batches the original
run's hooks drew (:func:`~.utils.replay_drawn`), so that it trains on the same batches as an uninterrupted run.
Usage::

    custom_hooks = [dict(type='QuantizerInitHook', num_batches=1)]
"""
from typing import Dict, List

from mmdet.registry import HOOKS
from torch import nn

from mmaqd.quantization.mode import quantizers
from mmaqd.quantization.quantizers.base import BaseQuantizer

from .utils import BatchDrawingHook, draw_batches, unwrap_model


def pending_quantizers(model: nn.Module) -> Dict[str, BaseQuantizer]:
    """The enabled data-init quantizers of ``model`` that are not initialised yet, by module name."""
    return {name: q for name, q in quantizers(model)
            if q.data_init and q.enabled and not bool(q.initialized)}


@HOOKS.register_module()
class QuantizerInitHook(BatchDrawingHook):
    """Run ``num_batches`` training batches in ``before_train`` when data-init quantizers are uninitialised.

    Args:
        num_batches: training batches to run (>= 1); the first one initialises every quantizer it reaches.
        forward_mode: ``'tensor'`` (network forward) or ``'loss'`` (also the loss computation, for quantizers
            that only the loss path reaches).
        reinit: at the start of a fresh run (iteration 0), initialise every data-init quantizer from data again,
            also those a quantized ``load_from`` checkpoint initialised: progressive initialisation (e.g. a
            2-bit fine-tune from a trained 4-bit model, whose ranges were learned for 4 bits). A resumed run keeps
            its trained ranges.

    Runs after :class:`~.percentile_calibration_hook.PercentileCalibrationHook` (priority ``NORMAL`` vs
    ``ABOVE_NORMAL``) so that calibration, not a single batch, sets FQN activation ranges when both are used.
    """

    priority = 'NORMAL'

    def __init__(self, num_batches: int = 1, forward_mode: str = 'tensor', reinit: bool = False) -> None:
        super().__init__(num_batches, forward_mode)
        if not isinstance(reinit, bool):
            raise TypeError(f'QuantizerInitHook: reinit must be a bool, got {reinit!r}')
        self.reinit = reinit

    def before_train(self, runner) -> None:
        model = unwrap_model(runner.model)
        if self.reinit and runner.iter == 0:
            reset = [q for _, q in quantizers(model) if q.data_init and q.enabled and bool(q.initialized)]
            for q in reset:
                q.initialized.fill_(False)
            runner.logger.info(f'QuantizerInitHook: reinit=True, {len(reset)} loaded quantizer range(s) will be '
                               'initialised from data again')
        pending = pending_quantizers(model)
        if not pending:
            self.skip(runner, 'every data-init quantizer is already initialised (resumed, loaded from a quantized '
                      'checkpoint or set up by an earlier hook); nothing to do')
            return
        ran = draw_batches(runner, self.num_batches, self.forward_mode)
        left: List[str] = [name for name, q in pending.items() if not bool(q.initialized)]
        runner.logger.info(f'QuantizerInitHook: initialised {len(pending) - len(left)} of {len(pending)} '
                           f'uninitialised quantizers from {ran} training batch(es) before the first step')
        if left:
            runner.logger.warning(f'QuantizerInitHook: {len(left)} quantizer(s) were not reached by '
                                  f"forward_mode='{self.forward_mode}' and initialise on the first training "
                                  f'batch instead: {left}')
