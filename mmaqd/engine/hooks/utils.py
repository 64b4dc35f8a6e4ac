"""What mmaqd's hooks share: the bare model behind a DDP wrapper, and a few training batches run through it
without gradients and without touching BN statistics (:func:`draw_batches`), drawn from the training loop's own
data in a way that a resumed run replays (:func:`replay_drawn`), so that it trains on the same batches as the
uninterrupted run.

:class:`~mmaqd.engine.hooks.QuantizerInitHook` (data-driven quantizer init before the first optimizer step)
and :class:`~mmaqd.engine.hooks.PercentileCalibrationHook` (FQN's calibration on n_cal training batches, FQN,
Li et al., CVPR 2019, section 3.4.1) both run :func:`run_batches`.
Both derive from :class:`BatchDrawingHook` (their arguments, and the log line of a run that needs no batch).
"""
from itertools import islice
from typing import Iterable

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch import nn

FORWARD_MODES = ('tensor', 'loss')


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model itself: ``model.module`` for an mmengine / torch DDP-style wrapper, else ``model``."""
    return model.module if is_model_wrapper(model) else model


def training_batches(runner) -> Iterable:
    """Where the hooks take training batches from: an iteration-based loop's own ``dataloader_iterator``, else
    ``runner.train_dataloader``.

    A second iterator of a dataloader with mmengine's ``InfiniteSampler`` must not be taken: the sampler's
    iterators share one index generator, and dropping the second iterator closes it, which ends the training
    loop's data (StopIteration on its first batch). An iteration-based run thus starts training on the batches
    after the ones the hook drew.
    """
    iterator = getattr(runner.train_loop, 'dataloader_iterator', None)
    return iterator if iterator is not None else runner.train_dataloader


def check_run_args(num_batches: int, forward_mode: str, who: str) -> None:
    """Validate the arguments the hooks pass on to :func:`run_batches`; raise a ValueError naming ``who``."""
    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
        raise ValueError(f'{who}: num_batches must be an int >= 1, got {num_batches!r}')
    if forward_mode not in FORWARD_MODES:
        raise ValueError(f'{who}: forward_mode={forward_mode!r} is not supported; allowed: {FORWARD_MODES}')


def run_batches(model: nn.Module, dataloader: Iterable, num_batches: int, forward_mode: str = 'tensor') -> int:
    """Run the first ``num_batches`` batches of ``dataloader`` through ``model``; return how many ran.

    Each batch goes through ``model.data_preprocessor(batch, training=True)`` (the training preprocessing)
    and ``model(**data, mode=forward_mode)``: ``'tensor'`` is the network's forward (backbone, neck, head),
    ``'loss'`` also computes the losses (reaches modules used only by the loss). Runs under
    ``torch.no_grad()`` with every module in eval mode, so BN layers normalize with, and do not update, their
    running statistics; each module's own ``training`` flag is restored afterwards (also on error), so
    modules deliberately kept in eval mode (frozen BN) stay so. Fewer batches run if the dataloader ends first.
    ``iter(dataloader)`` is taken: pass an iterator to continue it (see :func:`training_batches`).
    """
    check_run_args(num_batches, forward_mode, 'run_batches')
    model = unwrap_model(model)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    done = 0
    try:
        with torch.no_grad():
            for batch in islice(iter(dataloader), num_batches):
                data = model.data_preprocessor(batch, training=True)
                if isinstance(data, dict):
                    model(**data, mode=forward_mode)
                else:  # a (inputs, data_samples) sequence
                    model(*data, mode=forward_mode)
                done += 1
    finally:
        for module, was_training in modes:
            module.training = was_training
    return done


#: message-hub key (saved in checkpoints with the hub's runtime info) counting the training batches that hooks drew
#: from the training loop's iterator before the first step
DRAWN_KEY = 'mmaqd/batches_drawn'


def draw_batches(runner, num_batches: int, forward_mode: str = 'tensor') -> int:
    """:func:`run_batches` on the training loop's data (:func:`training_batches`), counting the batches drawn in
    the message hub (``DRAWN_KEY``) so that a run resumed from a later checkpoint skips them too. Returns how many
    ran."""
    ran = run_batches(unwrap_model(runner.model), training_batches(runner), num_batches, forward_mode)
    hub = runner.message_hub
    hub.update_info(DRAWN_KEY, int(hub.get_info(DRAWN_KEY, 0) or 0) + ran)
    return ran


def replay_drawn(runner) -> int:
    """In a resumed iteration-based run (``runner.iter > 0``), draw and drop, once, the batches that hooks drew
    before the first step of the original run (``DRAWN_KEY`` of the resumed message hub). mmengine then skips the
    ``runner.iter`` batches already trained on, and the next batch is the one the uninterrupted run trained on
    next. Returns how many were dropped (0 when not resumed, already replayed, or epoch-based)."""
    loop = runner.train_loop
    iterator = getattr(loop, 'dataloader_iterator', None)
    if runner.iter == 0 or iterator is None or getattr(loop, '_mmaqd_replayed', False):
        return 0
    loop._mmaqd_replayed = True
    n = int(runner.message_hub.get_info(DRAWN_KEY, 0) or 0)
    for _ in range(n):
        next(iterator)
    return n


class BatchDrawingHook(Hook):
    """Base of the hooks that run ``num_batches`` training batches in ``before_train`` (:func:`draw_batches`).

    Args:
        num_batches: training batches to run (>= 1).
        forward_mode: ``'tensor'`` (network forward) or ``'loss'`` (also the loss path).
    """

    def __init__(self, num_batches: int, forward_mode: str = 'tensor') -> None:
        check_run_args(num_batches, forward_mode, type(self).__name__)
        self.num_batches = num_batches
        self.forward_mode = forward_mode

    def skip(self, runner, reason: str) -> None:
        """Log why no batch is needed; a resumed run still drops the batches hooks drew (:func:`replay_drawn`)."""
        dropped = replay_drawn(runner)
        runner.logger.info(f'{type(self).__name__}: {reason}'
                           + (f'; resumed: skipped the {dropped} batch(es) hooks drew before the first step'
                              if dropped else ''))
