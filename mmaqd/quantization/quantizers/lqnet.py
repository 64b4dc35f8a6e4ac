"""LQ-Nets (Zhang et al., ECCV 2018) learned quantizer, eq. 3-4 and Algorithm 1 (quantization error
minimization, QEM).

A basis v in R^k spans the 2^k levels v^T e for every binary code e in {-1, 1}^k (signed: weights) or
{0, 1}^k (unsigned: activations after ReLU; the all-zero code gives an exact 0). The forward pass maps every
element to its nearest level, with a straight-through gradient for x. In training, after each forward, the
basis is re-fitted in closed form to the codes B just chosen, v* = argmin ||B v - x||^2 = (B^T B)^-1 B^T x,
solved as (B^T B + lam I) v = B^T x + lam v_old with a small ridge lam = ``ridge`` * trace(B^T B) / k (it keeps
the directions of unused codes at their old value), and kept as a moving average
v <- (1 - momentum) v + momentum v* (0.9 old + 0.1 new). B^T B and B^T x come from per-level counts and sums,
never an N x k matrix.

Init from the first batch: levels uniform on [-m, m] (signed) or [0, m] (unsigned), v_i = m 2^i / (2^k - 1)
with m = max|x| (or max(x, 0)), then ``init_iters`` QEM steps with momentum 1 on that batch (Lloyd-style),
per channel when ``per_channel`` (one basis per output channel, the layout of the LQ-Nets weights).
"""
from typing import Optional

import torch

from ..registry import QUANTIZERS
from .base import BaseQuantizer
from .utils import resolve_role, rows, subsample, sync_mean_


def binary_codes(bits: int, signed: bool, device=None) -> torch.Tensor:
    """All 2^k codes as rows, (2^k, k): entries in {-1, 1} (signed) or {0, 1}; column i is bit i."""
    j = torch.arange(2 ** bits, device=device).unsqueeze(1)  # (L, 1)
    b = ((j >> torch.arange(bits, device=device)) & 1).float()  # (L, k)
    return 2 * b - 1 if signed else b


@QUANTIZERS.register_module()
class LQNet(BaseQuantizer):
    """Learned quantization with a k-value basis (a persistent buffer, fitted by QEM, not by SGD).

    Args:
        bits, signed, per_channel, num_channels: see :class:`BaseQuantizer`.
        role: ``'weight'`` (always signed), ``'act'`` or ``None`` (``'weight'`` iff ``per_channel``).
        momentum: weight of the new least-squares basis in the moving average (LQ-Nets: 0.1).
        ridge: relative ridge of the closed-form solve (0 gives the plain normal equations).
        init_iters: QEM steps on the first batch.
    """

    data_init = True

    def __init__(self, bits: int, signed: Optional[bool] = False, per_channel: bool = False,
                 num_channels: Optional[int] = None, role: Optional[str] = None, momentum: float = 0.1,
                 ridge: float = 1e-4, init_iters: int = 10, *, mode: Optional[str] = None):
        role = resolve_role(role, per_channel, mode=mode, where=type(self).__name__)
        if not 0 < momentum <= 1:
            raise ValueError(f'momentum={momentum} must be in (0, 1]')
        super().__init__(bits, signed, per_channel, num_channels, role)
        self.momentum, self.ridge, self.init_iters = float(momentum), float(ridge), init_iters
        init = torch.tensor([2.0 ** i / (2 ** bits - 1) for i in range(bits)])  # (k,): levels on [-1, 1]/[0, 1]
        self.register_buffer('basis', init.repeat(self.param_shape + (1,)))  # (k,) or (C, k)

    def levels(self) -> torch.Tensor:
        """The 2^k levels, (1, L) or (C, L), level j belonging to code j of :func:`binary_codes`."""
        codes = binary_codes(self.bits, bool(self.signed), self.basis.device)  # (L, k)
        return self.basis.reshape(-1, self.bits) @ codes.t()  # (C or 1, L)

    def _nearest(self, r: torch.Tensor, levels: torch.Tensor) -> tuple:
        """Nearest level of every element of r (R, M) given levels (R, L): (values (R, M), code ids (R, M))."""
        srt, order = levels.sort(dim=1)  # (R, L), (R, L)
        bounds = (srt[:, 1:] + srt[:, :-1]) / 2  # (R, L - 1)
        pos = torch.searchsorted(bounds.contiguous(), r.contiguous())  # (R, M) in [0, L - 1]
        return srt.gather(1, pos), order.gather(1, pos)

    def _solve(self, r: torch.Tensor, code_id: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        """Least-squares basis (R, k) for rows r (R, M) coded by code_id (R, M), ridge towards old (R, k)."""
        codes = binary_codes(self.bits, bool(self.signed), r.device).double()  # (L, k)
        n_lv = codes.shape[0]
        counts = torch.zeros(r.shape[0], n_lv, dtype=torch.float64, device=r.device)
        counts.scatter_add_(1, code_id, torch.ones_like(r, dtype=torch.float64))  # (R, L)
        sums = torch.zeros_like(counts).scatter_add_(1, code_id, r.double())  # (R, L)
        btb = torch.einsum('rl,lk,lm->rkm', counts, codes, codes)  # (R, k, k)
        btx = sums @ codes  # (R, k)
        lam = self.ridge * btb.diagonal(dim1=1, dim2=2).sum(dim=1) / self.bits + 1e-12  # (R,)
        eye = torch.eye(self.bits, dtype=torch.float64, device=r.device)
        lhs = btb + lam[:, None, None] * eye  # (R, k, k)
        rhs = btx + lam[:, None] * old.double()  # (R, k)
        return torch.linalg.solve(lhs, rhs.unsqueeze(-1)).squeeze(-1).to(old.dtype)  # (R, k)

    def _update(self, r: torch.Tensor, code_id: torch.Tensor, momentum: float) -> None:
        """Moving-average update of the basis with the closed-form fit to rows r (R, M) coded by code_id."""
        old = self.basis.reshape(-1, self.bits)  # (R, k)
        new = self._solve(r, code_id, old)  # (R, k)
        self.basis.copy_(((1 - momentum) * old + momentum * new).reshape(self.basis.shape))

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        r = rows(x, self.per_channel).to(self.basis.dtype)  # (C, M) or (1, N)
        with torch.no_grad():
            q, code_id = self._nearest(r.detach(), self.levels())  # (R, M), (R, M)
            if self.training:
                self._update(r.detach(), code_id, self.momentum)
        q = q.reshape(x.shape).to(x.dtype)
        return q + (x - x.detach())  # value exactly the level; straight-through gradient for x

    def init_from(self, x: torch.Tensor) -> None:
        r = rows(x.float(), True) if self.per_channel else subsample(x.float()).reshape(1, -1)  # (R, M)
        m = (r.abs() if self.signed else r.clamp(min=0)).amax(dim=1)  # (R,)
        m = torch.where(m > 0, m, torch.ones_like(m))
        unit = torch.tensor([2.0 ** i / (2 ** self.bits - 1) for i in range(self.bits)], device=r.device)  # (k,)
        self.basis.copy_((m[:, None] * unit).reshape(self.basis.shape))
        for _ in range(self.init_iters):
            self._update(r, self._nearest(r, self.levels())[1], 1.0)
        sync_mean_(self.basis)

    def clip_bounds(self, x: torch.Tensor) -> tuple:
        """The lowest and highest level (per channel when ``per_channel``): values beyond them take the end level."""
        levels = self.levels()  # (C or 1, L)
        lo, hi = levels.amin(dim=1), levels.amax(dim=1)  # (C or 1,), (C or 1,)
        if not self.per_channel:
            return lo.reshape(()), hi.reshape(())
        return self.broadcast(lo, x), self.broadcast(hi, x)  # (C, 1, ..., 1)

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, momentum={self.momentum}'
