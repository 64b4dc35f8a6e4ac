"""LSQ (Esser et al., ICLR 2020) and LSQ+ (Bhalgat et al., CVPRW 2020): uniform quantizers with a learned
step size s, in the notation of AQD (arXiv 2007.06919v1) sections 3.1 and 3.3 (eq. 1-2).

LSQ:  out = round(clip(x / s, -Q_N, Q_P)) * s, with Q_N = 2^(k-1), Q_P = 2^(k-1) - 1 for a signed range
(weights) and Q_N = 0, Q_P = 2^k - 1 for an unsigned one. Straight-through round; the gradient of s is
multiplied by g = 1 / sqrt(N * Q_P), N = the number of elements sharing one step (per channel: elements of a
channel; per tensor: all elements of the batch tensor). Init from the first batch: s = 2 * mean|x| / sqrt(Q_P).

LSQ+: activations get a learned offset beta, out = round(clip((x - beta) / s, -Q_N, Q_P)) * s + beta, with
s and beta initialised from the first batch's min/max: s = (max - min) / (Q_P + Q_N), beta = min + Q_N * s
(the LSQ+ paper's beta = min - alpha_neg * s with alpha_neg = -Q_N). Both gradients are scaled by g. Weights keep
the symmetric LSQ form and start at s = max(|mean - 3 std|, |mean + 3 std|) / 2^(k-1) (per channel if set).
With beta != 0 the unsigned LSQ+ grid need not contain an exact zero.
"""
import math
from typing import Optional

import torch
from torch import nn

from ...ops.ste import round_ste, scale_grad
from ..registry import QUANTIZERS
from .base import BaseQuantizer
from .utils import per_row, resolve_role, rows, sync_mean_


@QUANTIZERS.register_module()
class LSQ(BaseQuantizer):
    """Learned step size quantization.

    Args:
        bits, signed, per_channel, num_channels: see :class:`BaseQuantizer`.
        role: ``'weight'`` (always signed), ``'act'`` or ``None`` (``'weight'`` iff ``per_channel``).
        grad_scale: scale the step size's gradient by g = 1 / sqrt(N * Q_P) (LSQ's rule); False gives g = 1.
    """

    data_init = True
    range_names = positive_names = ('step_size',)

    def __init__(self, bits: int, signed: Optional[bool] = False, per_channel: bool = False,
                 num_channels: Optional[int] = None, role: Optional[str] = None, grad_scale: bool = True,
                 *, mode: Optional[str] = None):
        role = resolve_role(role, per_channel, mode=mode, where=type(self).__name__)
        super().__init__(bits, signed, per_channel, num_channels, role)
        self.grad_scale = grad_scale
        self.step_size = nn.Parameter(torch.ones(self.param_shape))  # () or (C,)

    @property
    def qn_qp(self) -> tuple:
        """(Q_N, Q_P): the integer range is [-Q_N, Q_P]."""
        if self.signed:
            return 2 ** (self.bits - 1), 2 ** (self.bits - 1) - 1
        return 0, 2 ** self.bits - 1

    def grad_factor(self, x: torch.Tensor) -> float:
        """g = 1 / sqrt(N * Q_P), N = elements per step size; 1.0 when ``grad_scale`` is off."""
        if not self.grad_scale:
            return 1.0
        n = x.numel() // self.num_channels if self.per_channel else x.numel()
        return 1.0 / math.sqrt(max(n, 1) * self.qn_qp[1])

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        qn, qp = self.qn_qp
        s = self.broadcast(scale_grad(self.step_size, self.grad_factor(x)), x)  # () or (C, 1, ..., 1)
        return (round_ste((x / s).clamp(-qn, qp)) * s).to(x.dtype)  # same shape as x

    def init_from(self, x: torch.Tensor) -> None:
        s = 2 * rows(x.float(), self.per_channel).abs().mean(dim=1) / math.sqrt(self.qn_qp[1])  # (C,) or (1,)
        s = torch.where(s > 0, s, torch.ones_like(s))
        self.step_size.copy_(sync_mean_(per_row(s, self.per_channel)))

    def clip_bounds(self, x: torch.Tensor) -> tuple:
        """[-Q_N s, Q_P s]."""
        qn, qp = self.qn_qp
        s = self.broadcast(self.step_size.detach(), x)  # () or (C, 1, ..., 1)
        return -qn * s, qp * s

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, grad_scale={self.grad_scale}'


@QUANTIZERS.register_module()
class LSQPlus(LSQ):
    """LSQ+ : LSQ with a learned offset for activations and min/max (act) or 3-sigma (weight) init.

    Args: as :class:`LSQ`. Activations (``role='act'``) get the per-tensor parameter ``offset`` (beta).
    """

    range_names = ('step_size', 'offset')

    def __init__(self, bits: int, signed: Optional[bool] = False, per_channel: bool = False,
                 num_channels: Optional[int] = None, role: Optional[str] = None, grad_scale: bool = True,
                 *, mode: Optional[str] = None):
        super().__init__(bits, signed, per_channel, num_channels, role, grad_scale, mode=mode)
        self.offset = nn.Parameter(torch.zeros(())) if self.role == 'act' else None  # beta, ()

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        if self.offset is None:
            return super().quantize(x)
        qn, qp = self.qn_qp
        g = self.grad_factor(x)
        s, beta = scale_grad(self.step_size, g), scale_grad(self.offset, g)  # (), ()
        return (round_ste(((x - beta) / s).clamp(-qn, qp)) * s + beta).to(x.dtype)  # same shape as x

    def init_from(self, x: torch.Tensor) -> None:
        qn, qp = self.qn_qp
        x = x.float()
        if self.offset is None:
            std, mean = torch.std_mean(rows(x, self.per_channel), dim=1, correction=0)  # (C,) or (1,)
            s = torch.maximum((mean - 3 * std).abs(), (mean + 3 * std).abs()) / 2 ** (self.bits - 1)
            s = torch.where(s > 0, s, torch.ones_like(s))
            self.step_size.copy_(sync_mean_(per_row(s, self.per_channel)))
            return
        lo, hi = x.min(), x.max()  # (), ()
        s = (hi - lo) / (qp + qn)
        s = torch.where(s > 0, s, torch.ones_like(s))
        self.step_size.copy_(sync_mean_(s))
        self.offset.copy_(sync_mean_(lo + qn * s))

    def clip_bounds(self, x: torch.Tensor) -> tuple:
        """[beta - Q_N s, beta + Q_P s] for activations, LSQ's range for weights."""
        lo, hi = super().clip_bounds(x)
        if self.offset is None:
            return lo, hi
        beta = self.offset.detach()  # ()
        return lo + beta, hi + beta
