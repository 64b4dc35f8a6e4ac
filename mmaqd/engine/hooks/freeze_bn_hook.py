"""Freeze the folded BN statistics from a given iteration on (FQN, Li et al., CVPR 2019, section 3.5.1 and Table 3).

FQN freezes the BN statistics for the whole fine-tune (``QuantConfig(fold_bn=True, freeze_bn=True)``, eq. 13-14);
the quantization whitepaper (Krishnamoorthi, arXiv 1806.08342), FQN's Table 3 baseline, folds batch statistics first
(eq. 11-12) and freezes them only for the final steps (10k of 40k). With ``freeze_bn=False`` in the model's
``quant_cfg`` this hook sets every :class:`~mmaqd.quantization.layers.QConvBN` to ``frozen = (iteration >= start_iter)``
before each training iteration, so a resumed run is in the right state too. Usage (freeze for the last 100 of 400
iterations)::

    custom_hooks = [dict(type='FreezeBNHook', start_iter=300)]
"""
from typing import Optional

from mmdet.registry import HOOKS
from mmengine.hooks import Hook

from mmaqd.quantization.layers import set_bn_frozen

from .utils import unwrap_model


@HOOKS.register_module()
class FreezeBNHook(Hook):
    """Folded BN statistics follow batch statistics before ``start_iter`` and are frozen from it on.

    Args:
        start_iter: the 0-based iteration from which the statistics are frozen (``runner.iter`` before the
            iteration runs); 0 freezes them for the whole run.
    """

    priority = 'NORMAL'

    def __init__(self, start_iter: int) -> None:
        if isinstance(start_iter, bool) or not isinstance(start_iter, int) or start_iter < 0:
            raise ValueError(f'FreezeBNHook: start_iter must be an int >= 0, got {start_iter!r}')
        self.start_iter = start_iter
        self._frozen: Optional[bool] = None  # the state last set

    def _update(self, runner) -> None:
        frozen = runner.iter >= self.start_iter
        if frozen is self._frozen:
            return
        n = set_bn_frozen(unwrap_model(runner.model), frozen)
        if n == 0:
            raise RuntimeError('FreezeBNHook: the model has no folded conv/BN pair (QConvBN); set fold_bn=True in '
                               "the model's quant_cfg")
        self._frozen = frozen
        state = 'frozen' if frozen else f'following batch statistics until iteration {self.start_iter}'
        runner.logger.info(f'FreezeBNHook: iteration {runner.iter}: BN statistics of {n} folded convs {state}')

    def before_train(self, runner) -> None:
        self._update(runner)

    def before_train_iter(self, runner, batch_idx: int, data_batch: Optional[dict] = None) -> None:
        self._update(runner)
