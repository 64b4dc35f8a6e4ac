"""Helpers shared by the quantizers: weight/activation mode, per-channel views, sampling, gradient scaling and
keeping data-driven initialisation (ranges and signedness) identical on every distributed rank.

Per-channel ranges run along dim 0 (BaseQuantizer.broadcast). For an activation dim 0 is the batch, so a
per-channel quantizer is a weight quantizer: ``mode=None`` resolves to ``'weight'`` when ``per_channel`` is set
(or when a weight-only option such as LIQ's ``weight_norm`` is), else to ``'act'``.
"""
from typing import Optional

import torch
import torch.distributed as dist

MODES = ('weight', 'act')


def resolve_mode(mode: Optional[str], per_channel: bool, weight_hint: bool = False) -> str:
    """``'weight'`` or ``'act'``; ``None`` infers ``'weight'`` from ``per_channel`` or ``weight_hint``."""
    if mode is None:
        mode = 'weight' if (per_channel or weight_hint) else 'act'
    if mode not in MODES:
        raise ValueError(f'mode={mode!r} is not supported; allowed: {MODES} or None')
    if mode == 'act' and per_channel:
        raise ValueError('per_channel=True runs along dim 0, the batch dim of an activation; '
                         "use it with mode='weight' only")
    return mode


def rows(x: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """``x`` as (C, M) rows, one per channel along dim 0, or a single (1, N) row."""
    return x.reshape(x.shape[0], -1) if per_channel else x.reshape(1, -1)


def per_row(v: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """A per-row statistic (C,) or (1,) shaped like the quantizer's parameter: (C,) or ()."""
    return v if per_channel else v.reshape(())


def subsample(x: torch.Tensor, max_numel: int = 1 << 18) -> torch.Tensor:
    """A deterministic strided sample of at most ``max_numel`` elements of ``x`` (flat), for statistics."""
    flat = x.reshape(-1)  # (N,)
    step = -(-flat.numel() // max_numel)
    return flat[::step] if step > 1 else flat  # (<= max_numel,)


def scale_grad(p: torch.Tensor, scale: float) -> torch.Tensor:
    """``p`` in the forward pass, gradient multiplied by ``scale`` in the backward pass (LSQ's g)."""
    ps = p * scale
    return p.detach() + (ps - ps.detach())  # value exactly p


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def sync_mean_(t: torch.Tensor) -> torch.Tensor:
    """Average ``t`` in place over the distributed ranks (no-op without an initialised process group).

    Data-driven inits happen on the first batch, which differs per rank; DDP does not re-broadcast parameters
    after construction, so without this the ranks would keep different ranges. Every rank must call it at the
    same point (true for the first forward of a model run by all ranks).
    """
    if _distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t.div_(dist.get_world_size())
    return t


def sync_any(flag: bool, device: Optional[torch.device] = None) -> bool:
    """``True`` if ``flag`` is true on any distributed rank (``flag`` itself without a process group).

    For decisions taken from the first batch, such as a quantizer's signedness: a rank whose batch happens to hold
    no negative value must still pick the grid of the others. Called at the same point on every rank, as
    :func:`sync_mean_`.
    """
    if not _distributed():
        return bool(flag)
    t = torch.tensor([int(bool(flag))], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
