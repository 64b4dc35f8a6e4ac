"""Helpers shared by the quantizers: the role (weight or activation), per-channel views, sampling and keeping
data-driven initialisation (ranges and signedness) identical on every distributed rank.

Per-channel ranges run along dim 0 (:func:`mmaqd.ops.broadcast_dim0`). For an activation dim 0 is the batch, so a
per-channel quantizer is a weight quantizer: ``role=None`` resolves to ``'weight'`` when ``per_channel`` is set
(or when a weight-only option such as LIQ's ``weight_norm`` is), else to ``'act'``.
"""
from typing import Optional

import torch
import torch.distributed as dist

from ..deprecation import deprecated_arg

#: what a quantizer quantizes: a layer's weight, or an activation (a layer's input or output, an add's operand or sum)
ROLES = ('weight', 'act')


def resolve_role(role: Optional[str], per_channel: bool, weight_hint: bool = False, mode: Optional[str] = None,
                 where: str = 'quantizer') -> str:
    """``'weight'`` or ``'act'``; ``None`` infers ``'weight'`` from ``per_channel`` or ``weight_hint``.

    ``mode`` is the deprecated name of ``role`` (a warning names the new one).
    """
    role = deprecated_arg('mode', mode, 'role', role, where, stacklevel=3)
    if role is None:
        role = 'weight' if (per_channel or weight_hint) else 'act'
    if role not in ROLES:
        raise ValueError(f'role={role!r} is not supported; allowed: {ROLES} or None')
    if role == 'act' and per_channel:
        raise ValueError('per_channel=True runs along dim 0, the batch dim of an activation; '
                         "use it with role='weight' only")
    return role


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
