"""Stop a training run at its first non-finite loss, gradient, parameter or quantizer range.

A too-high learning rate drives a low-bit detector to NaN within a few iterations; mmengine then trains on, exits 0
and writes checkpoints whose tensors, quantizer ranges included, are NaN. :class:`DivergenceGuardHook` checks:

* before every optimizer step (a step pre-hook on the optimizer): the iteration's losses (taken from the model's
  ``mode='loss'`` forward by a forward hook) and every gradient the step would apply;
* after every iteration, before the other hooks (priority ``VERY_HIGH``; mmengine's ``CheckpointHook`` is
  ``VERY_LOW``): every parameter and floating-point buffer (BN statistics, quantizer state such as FQN's
  ``lb`` / ``ub`` or LQ-Nets' bases), and that every quantizer's interval or step length (its ``positive_names``:
  LIQ's / PACT's ``alpha``, LSQ's ``step_size``) is > 0;
* once in ``before_train``: the weights the run starts from (``load_from`` / resume).

On a failure it raises :class:`DivergenceError` naming the iteration, the bad losses and the modules and tensors
that hold non-finite values; the runner stops there, so no checkpoint of that iteration (or a later one) is
written and the newest checkpoint on disk is the last good one (``--resume`` from it with a lower lr).

Cost: each check is one fused reduction, the 2-norm of every tensor (``torch._foreach_norm``; a NaN or inf
propagates into it), and one host sync of a single flag (all-reduced first, so that every rank stops at the same
point). Only a failed check looks further: an exact per-value test (a finite tensor whose norm overflows is no
divergence), then the tensors by name. On a 2-core CPU the two checks of the AQD FCOS benchmark model (3.3M
parameters) take ~2.5 ms of a ~150 ms iteration.
Every mmaqd config has it as a default hook (``configs/_base_/default_runtime.py``), so that a config that sets
its own ``custom_hooks`` keeps it::

    default_hooks = dict(divergence_guard=dict(type='DivergenceGuardHook'))
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmdet.registry import HOOKS
from mmengine.dist import all_reduce
from mmengine.hooks import Hook
from mmengine.optim import OptimWrapper, OptimWrapperDict
from torch import nn

from mmaqd.quantization.mode import quantizers

from .utils import unwrap_model

MAX_LISTED = 3  # bad tensors named per kind in an error


class DivergenceError(RuntimeError):
    """Training reached a non-finite loss, gradient, parameter or buffer, or a quantizer range that is not > 0."""


def norms_finite(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Whether the 2-norm of every tensor is finite, a 0-d bool tensor (no sync): one fused reduction
    (``torch._foreach_norm``). A NaN or inf makes its tensor's norm non-finite; so can, rarely, a finite tensor
    whose squares overflow (float32: values beyond ~1e19), hence a ``False`` is confirmed by :func:`values_finite`.
    """
    with torch.no_grad():
        if hasattr(torch, '_foreach_norm'):
            norms = torch._foreach_norm(list(tensors))
        else:  # pragma: no cover (torch < 1.13)
            norms = [torch.linalg.vector_norm(t) for t in tensors]
        return torch.isfinite(torch.stack(norms)).all()  # stack: (T,)


def values_finite(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Whether every value of every tensor is finite, a 0-d bool tensor: exact, several times slower."""
    with torch.no_grad():
        return torch.stack([torch.isfinite(t).all() for t in tensors]).all()  # stack: (T,)


def ranges_positive(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Whether every value of every tensor is > 0 (a NaN is not), a 0-d bool tensor."""
    with torch.no_grad():
        return torch.cat([t.detach().reshape(-1) for t in tensors]).min() > 0


def positive_ranges(model: nn.Module) -> List[Tuple[str, torch.Tensor]]:
    """``('<quantizer>.<name>', tensor)`` for every quantizer range tensor of ``model`` that must stay > 0."""
    out = []
    for qname, q in quantizers(model):
        for attr in q.positive_names:
            t = getattr(q, attr, None)
            if torch.is_tensor(t) and t.numel():
                out.append((f'{qname}.{attr}', t))
    return out


def describe(name: str, t: torch.Tensor) -> str:
    """``module 'a.b', tensor 'weight' (3 NaN, 1 inf of 1728 values)`` for a tensor with non-finite values."""
    module, _, tensor = name.rpartition('.')
    n_nan, n_inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
    return f"module '{module}', tensor '{tensor}' ({n_nan} NaN, {n_inf} inf of {t.numel()} values)"


def describe_range(name: str, t: torch.Tensor) -> str:
    """``quantizer 'm', tensor 'alpha' = -0.3 (must be finite and > 0)`` for a range tensor that is not."""
    module, _, tensor = name.rpartition('.')
    t = t.detach().float().reshape(-1)
    bad = ~(torch.isfinite(t) & (t > 0))
    value = f'{t[0].item():.4g}' if t.numel() == 1 else \
        f'{int(bad.sum())} of {t.numel()} channels bad, e.g. {t[bad][0].item():.4g}'
    return f"quantizer '{module}', tensor '{tensor}' = {value} (must be finite and > 0)"


def listed(items: List[str], kind: str) -> str:
    """``kind (N): item; item; ...``, at most MAX_LISTED items."""
    more = f'; and {len(items) - MAX_LISTED} more' if len(items) > MAX_LISTED else ''
    return f'{kind} ({len(items)}): ' + '; '.join(items[:MAX_LISTED]) + more


def torch_optimizers(optim_wrapper) -> List[torch.optim.Optimizer]:
    """The torch optimizers behind an mmengine OptimWrapper / OptimWrapperDict (none for anything else)."""
    if isinstance(optim_wrapper, OptimWrapperDict):
        return [w.optimizer for w in optim_wrapper.values()]
    if isinstance(optim_wrapper, OptimWrapper):
        return [optim_wrapper.optimizer]
    return []


@HOOKS.register_module()
class DivergenceGuardHook(Hook):
    """Raise :class:`DivergenceError` at the first non-finite loss, gradient, parameter / buffer or quantizer
    range (see the module docstring). No arguments: it checks every iteration, at the cost of two fused reductions.
    """

    priority = 'VERY_HIGH'  # after_train_iter before every other hook, CheckpointHook (VERY_LOW) included

    def __init__(self) -> None:
        self._runner = None
        self._handles: list = []
        self._losses: List[Tuple[str, torch.Tensor]] = []  # (loss name, detached value) of this iteration
        self._state: List[Tuple[str, torch.Tensor]] = []   # parameters and floating-point buffers, by name
        self._ranges: List[Tuple[str, torch.Tensor]] = []  # quantizer ranges that must stay > 0
        self._param_names: Dict[int, str] = {}

    # ------------------------------------------------------------------------------------------------ set-up
    def before_train(self, runner) -> None:
        model = unwrap_model(runner.model)
        self._runner = runner
        self._param_names = {id(p): n for n, p in model.named_parameters()}
        self._state = [(n, t) for n, t in list(model.named_parameters()) + list(model.named_buffers())
                       if t.is_floating_point() and t.numel()]
        self._ranges = positive_ranges(model)
        self._handles = [model.register_forward_hook(self._record_losses)]
        optimizers = torch_optimizers(getattr(runner, 'optim_wrapper', None))
        self._handles += [opt.register_step_pre_hook(self._before_step) for opt in optimizers]
        if not optimizers:
            runner.logger.warning('DivergenceGuardHook: no mmengine OptimWrapper on the runner; gradients are not '
                                  'checked (losses, parameters and quantizer ranges are)')
        self._check_state(f'in the weights the run starts from (load_from / resume, iteration {runner.iter}); '
                          'the run stops before its first step')
        runner.logger.info(f'DivergenceGuardHook: checking the losses, the gradients, {len(self._state)} '
                           f'parameters / buffers and {len(self._ranges)} quantizer ranges every iteration')

    def after_train(self, runner) -> None:
        while self._handles:
            self._handles.pop().remove()
        self._runner = None

    # ------------------------------------------------------------------------------------------------ checks
    def before_train_iter(self, runner, batch_idx: int, data_batch: Optional[dict] = None) -> None:
        self._losses.clear()  # e.g. from QuantizerInitHook's loss-mode batches

    def _record_losses(self, module: nn.Module, args: tuple, output) -> None:
        """Forward hook: keep the loss entries of a ``mode='loss'`` output (a dict), as mmengine sums them."""
        if not isinstance(output, dict):
            return
        for key, value in output.items():
            if 'loss' not in key:
                continue
            for t in (value if isinstance(value, (list, tuple)) else [value]):
                if torch.is_tensor(t) and t.numel():
                    self._losses.append((key, t.detach()))

    def _before_step(self, optimizer: torch.optim.Optimizer, args, kwargs) -> None:
        """Optimizer step pre-hook: this iteration's losses and the gradients about to be applied."""
        grads = [p.grad for group in optimizer.param_groups for p in group['params']
                 if p.grad is not None and p.grad.numel() and not p.grad.is_sparse]
        self._check(grads, [], f'at iteration {self._iteration()}, before the optimizer step; the run stops '
                    'here, so no checkpoint of this iteration is written', optimizer)

    def after_train_iter(self, runner, batch_idx: int, data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        self._check_state(f'at iteration {runner.iter + 1}, after the optimizer step; the run stops here, '
                          'before any checkpoint of this iteration is written')

    def _iteration(self) -> str:
        return str(self._runner.iter + 1) if self._runner is not None else '?'

    def _check_state(self, where: str) -> None:
        """Parameters / buffers, quantizer ranges and any loss that no optimizer step checked."""
        self._check([t for _, t in self._state], [t for _, t in self._ranges], where)

    def _check(self, tensors: List[torch.Tensor], ranges: List[torch.Tensor], where: str,
               optimizer: Optional[torch.optim.Optimizer] = None) -> None:
        """Raise unless this iteration's losses and ``tensors`` are finite and ``ranges`` > 0, on every rank.

        The fast test (fused norms) costs one sync; only when it fails does the exact one run, so that a finite
        tensor whose norm overflows does not stop the run.
        """
        losses = [t for _, t in self._losses]
        fast = ([values_finite(losses)] if losses else []) + ([norms_finite(tensors)] if tensors else []) + \
            ([ranges_positive(ranges)] if ranges else [])
        if not self._all_ok(fast) and not self._all_ok(
                ([values_finite(losses + tensors)] if losses or tensors else []) +
                ([ranges_positive(ranges)] if ranges else [])):
            self._raise(where, optimizer)
        self._losses.clear()

    @staticmethod
    def _all_ok(flags: List[torch.Tensor]) -> bool:
        """All flags true on every rank: one all-reduce (distributed runs) and one host sync."""
        if not flags:
            return True
        device = flags[0].device
        bad = torch.logical_not(torch.stack([f.to(device) for f in flags]).all()).float().reshape(1)  # (1,)
        all_reduce(bad, op='max')  # a no-op outside distributed runs
        return not bool(bad.item())

    # ------------------------------------------------------------------------------------------------ report
    def _raise(self, where: str, optimizer: Optional[torch.optim.Optimizer] = None) -> None:
        """Locate every bad tensor by name (only after a failure) and raise :class:`DivergenceError`."""
        parts = []
        losses = [f"'{k}' = {t.float().sum().item()}" for k, t in self._losses if not torch.isfinite(t).all()]
        if losses:
            parts.append(listed(losses, 'non-finite loss'))
        state = [describe(n, t) for n, t in self._state if not torch.isfinite(t).all()]
        if state:
            parts.append(listed(state, 'non-finite parameter / buffer'))
        ranges = [describe_range(n, t) for n, t in self._ranges
                  if not bool((torch.isfinite(t) & (t > 0)).all())]
        if ranges:
            parts.append(listed(ranges, 'quantizer range not > 0'))
        if optimizer is not None:
            grads = [describe(self._param_names.get(id(p), f'<unnamed>.param{i}'), p.grad)
                     for group in optimizer.param_groups for i, p in enumerate(group['params'])
                     if p.grad is not None and not p.grad.is_sparse and not torch.isfinite(p.grad).all()]
            if grads:
                parts.append(listed(grads, 'non-finite gradient'))
        found = '. '.join(parts) if parts else 'this rank holds no bad value: another rank found one'
        raise DivergenceError(
            f'DivergenceGuardHook: training diverged {where}. {found}. Resume from the last checkpoint (--resume) '
            'with a lower lr (optim_wrapper.optimizer.lr) or gradient clipping '
            '(optim_wrapper.clip_grad=dict(max_norm=...))')
