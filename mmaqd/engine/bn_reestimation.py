"""Re-estimating BN running statistics of a trained (quantized) detector from training batches.

A fine-tune's BN running statistics are exponential averages over the last iterations, taken while the weights
and quantizer ranges were still moving; the quantized model at the end of training sees other statistics. This
recomputes them for the final model: every BN (each level's own BN of a multi-level norm included) is reset and
then averaged cumulatively (``momentum=None``) over ``num_batches`` training batches, run in train mode without
gradients and with the quantizers fixed (their ranges are not touched; a data-init quantizer must already be
initialised). A lever of the low-bit accuracy study (configs/aqd/README.md); it is not part of the AQD recipe.
"""
from itertools import islice
from typing import Iterable

import torch
from torch import nn

__all__ = ['reestimate_bn']


@torch.no_grad()
def reestimate_bn(model: nn.Module, batches: Iterable, num_batches: int) -> int:
    """Recompute the running mean and variance of every BN of ``model`` over the first ``num_batches`` of
    ``batches`` (mmengine data batches: ``model.data_preprocessor(batch, True)`` then the ``tensor`` forward);
    returns how many batches ran. The model's and its modules' training flags and BN momenta are restored."""
    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
        raise ValueError(f'num_batches must be an int >= 1, got {num_batches!r}')
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        raise ValueError(f'{type(model).__name__} has no BN layer with running statistics to re-estimate')
    modes = [(m, m.training) for m in model.modules()]
    momenta = [(bn, bn.momentum) for bn in bns]
    saved = [(bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()) for bn in bns]
    done = 0
    try:
        model.train()
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative moving average: the plain mean over the batches
        for batch in islice(iter(batches), num_batches):
            data = model.data_preprocessor(batch, True)
            model(data['inputs'], data.get('data_samples'), mode='tensor')
            done += 1
    finally:
        for bn, momentum in momenta:
            bn.momentum = momentum
        for module, training in modes:
            module.training = training
        if done == 0:  # nothing ran (or it failed): the old statistics, not reset ones
            for bn, (mean, var, count) in zip(bns, saved):
                bn.running_mean.copy_(mean), bn.running_var.copy_(var), bn.num_batches_tracked.copy_(count)
    if done == 0:
        raise ValueError('reestimate_bn: the batches gave no batch; the BN statistics are unchanged')
    return done
