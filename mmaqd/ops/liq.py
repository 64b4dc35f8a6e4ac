"""Learned interval quantization (LIQ) as a fake-quant op: AQD (arXiv 2007.06919v1) section 3.3, eq. 3-7.

With q = 2^k - 1 and a learnable interval alpha > 0:

* signed (weights, eq. 3 and 5):   w_hat = 0.5 * (clip(w / alpha, -1, 1) + 1),  w_bar = round(q * w_hat) / q,
  output alpha * (2 * w_bar - 1): the 2^k levels -alpha ... alpha (for k = 2: -a, -a/3, a/3, a; no zero level).
* unsigned (activations, eq. 4 and 5): x_bar = round(q * clip(x / alpha, 0, 1)) / q, output alpha * x_bar.

Backward (eq. 6-7, straight-through estimator on round only), v = x / alpha:

* d out / d x: 1 inside the interval, 0 outside.
* d out / d alpha: inside, the quantized normalized value minus v, i.e. (2 * w_bar - 1) - v for the signed form
  and x_bar - v for the unsigned one; outside, sign(x) for the signed form and 1 for x >= alpha (unsigned).
* "inside" is |v| < 1 (signed) and 0 <= v < 1 (unsigned), as in eq. 6-7; an activation below 0 gets 0 for both.

A per-channel alpha (one value per slice along dim 0) gets its gradient summed over the other dims.

``zero_level=True`` (signed only) swaps eq. 3's even grid for the symmetric grid with an exact zero,
alpha * j / m with j in -m..m and m = 2^(k-1) - 1 (2^k - 1 levels; for k = 2: -alpha, 0, alpha), the grid of the
authors' code's "symmetric" option and the one int8 runtimes (ONNX's QuantizeLinear with zero point 0) can
represent. The gradients are eq. 6-7 with these levels. Unsigned grids already have a zero level and are unchanged.
``torch.round`` rounds halves to even; ties are measure-zero for real data.
"""
import torch

from .checks import broadcast_dim0, check_bits

__all__ = ['liq_fake_quant']


def _check_args(x: torch.Tensor, alpha: torch.Tensor, bits, signed) -> None:
    check_bits(bits)
    if not isinstance(signed, bool):
        raise TypeError(f'signed must be a bool, got {signed!r}')
    if not torch.is_tensor(x) or not torch.is_tensor(alpha):
        raise TypeError('x and alpha must be tensors')
    scalar = alpha.dim() == 0 or (alpha.dim() == 1 and alpha.numel() == 1)
    per_channel = alpha.dim() == 1 and x.dim() >= 1 and alpha.shape[0] == x.shape[0]
    if not (scalar or per_channel):
        raise ValueError(f'alpha must be a scalar or have shape (x.shape[0],) = ({x.shape[0] if x.dim() else "-"},)'
                         f'; got alpha.shape={tuple(alpha.shape)} for x.shape={tuple(x.shape)}')


def _levels_(v: torch.Tensor, q: int, signed: bool, zero_level: bool = False) -> torch.Tensor:
    """Quantized normalized value, computed in place in ``v`` (a tensor this module owns) and returned:
    2 * w_bar - 1 in [-1, 1] (signed), round(m * v) / m (signed, zero level, m = (q - 1) / 2) or x_bar in [0, 1]
    (unsigned).

    The signed value is written as an integer over q, (2 * round(q * w_hat) - q) / q, so that the levels are exact
    mirror images and the ends exactly -1 and 1.
    """
    if signed and zero_level:
        m = (q - 1) // 2
        return v.clamp_(-1, 1).mul_(m).round_().div_(m)
    if signed:
        # eq. 3: w_hat = 0.5 * (clip(v, -1, 1) + 1); eq. 5 on q * w_hat; then the affine map back to [-1, 1]
        # (c + 1) * (0.5 * q) rounds once, as 0.5 * (c + 1) * q does (the 0.5 is exact): same values, one op less
        return v.clamp_(-1, 1).add_(1).mul_(0.5 * q).round_().mul_(2).sub_(q).div_(q)
    return v.clamp_(0, 1).mul_(q).round_().div_(q)  # eq. 4 and 5


def _pass_inside(grad: torch.Tensor, v: torch.Tensor, signed: bool) -> torch.Tensor:
    """``grad`` where eq. 6-7 take their inside branch, |v| < 1 (signed) or 0 <= v < 1 (unsigned), 0 elsewhere.

    Written without bool tensors: on the CPU a comparison with a bool result, and a float x bool product, each
    take several times as long as a float op.
    """
    if signed:
        return torch.ops.aten.hardtanh_backward(grad, v, -1.0, 1.0)  # grad where -1 < v < 1
    outside = torch.floor(v).abs_().clamp_max_(1)  # 0 where floor(v) == 0, i.e. 0 <= v < 1; else 1
    return torch.addcmul(grad, grad, outside, value=-1)


def _sum_per_alpha(a: torch.Tensor, u: torch.Tensor, w: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
    """sum(u * w) in ``acc`` over all of x (scalar alpha) or over each slice along dim 0 (per-channel alpha)."""
    if a.dim() == 0:
        if u.dtype == w.dtype == acc and u.is_contiguous() and w.is_contiguous():
            return torch.dot(u.view(-1), w.view(-1))  # one pass, no temporary
        return (u.to(acc) * w.to(acc)).sum()
    return (u.to(acc) * w.to(acc)).reshape(u.shape[0], -1).sum(dim=1)  # (C,)


class _LIQFakeQuant(torch.autograd.Function):
    """Explicit forward/backward so that the gradients are exactly eq. 6-7.

    Cost matters: every conv input and weight of a quantized model passes through here in every step. The
    forward allocates one tensor and works in place on it. Only ``x`` and alpha are saved (``x`` is usually
    also saved by the op before, so it costs no memory); the backward recomputes v = x / alpha and the levels L
    and uses that eq. 6-7 is, element-wise, d out / d alpha = L - v * inside (outside the interval L is the clipped
    end, sign(x) or 1 or 0), so that

        grad_alpha = sum(grad * L) - sum(grad_x * v),   grad_x = grad * inside,

    two reductions instead of building the piecewise derivative.
    """

    @staticmethod
    def forward(ctx, x, alpha, bits, signed, zero_level):
        a = broadcast_dim0(alpha, x)  # () or (C, 1, ..., 1)
        if a.dtype != x.dtype:
            a = a.to(x.dtype)
        out = _levels_(x / a, 2 ** bits - 1, signed, zero_level).mul_(a)  # same shape as x
        ctx.save_for_backward(x, a)
        ctx.q, ctx.signed, ctx.alpha_shape, ctx.alpha_dtype = 2 ** bits - 1, signed, alpha.shape, alpha.dtype
        ctx.zero_level = zero_level
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, a = ctx.saved_tensors  # a: alpha broadcast along dim 0 of x, in x's dtype
        v = x / a  # same shape as x
        grad_x = _pass_inside(grad_out, v, ctx.signed)  # same shape as x: straight through inside, 0 outside
        grad_alpha = None
        if ctx.needs_input_grad[1]:
            acc = torch.float64 if grad_out.dtype == torch.float64 else torch.float32  # half precision sums in fp32
            grad_alpha = _sum_per_alpha(a, grad_x, v, acc).neg_()
            levels = _levels_(v, ctx.q, ctx.signed, ctx.zero_level)  # v is done: L computed in place
            grad_alpha += _sum_per_alpha(a, grad_out, levels, acc)
            grad_alpha = grad_alpha.reshape(ctx.alpha_shape).to(ctx.alpha_dtype)
        return (grad_x if ctx.needs_input_grad[0] else None), grad_alpha, None, None, None


def liq_fake_quant(x: torch.Tensor, alpha: torch.Tensor, bits: int, signed: bool,
                   zero_level: bool = False) -> torch.Tensor:
    """De-quantized LIQ output of ``x`` (same shape and dtype as ``x``).

    Args:
        x: any-shape float tensor.
        alpha: the interval, a scalar tensor (or shape (1,)) or one value per slice of dim 0, shape (x.shape[0],).
            It should be positive.
        bits: k, an int in 2..8.
        signed: True for weights (eq. 3, levels in [-alpha, alpha]), False for activations (eq. 4, [0, alpha]).
        zero_level: with ``signed``, the symmetric grid alpha * j / m, j in -m..m, m = 2^(k-1) - 1, which has an
            exact zero (see the module docstring); no effect on an unsigned grid.
    """
    _check_args(x, alpha, bits, signed)
    if not isinstance(zero_level, bool):
        raise TypeError(f'zero_level must be a bool, got {zero_level!r}')
    return _LIQFakeQuant.apply(x, alpha, bits, signed, zero_level)
