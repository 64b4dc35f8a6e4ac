"""Learned interval quantization (LIQ) as a fake-quant op: AQD (aqd.md) section 3.3, eq. 3-7.

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
``torch.round`` rounds halves to even; ties are measure-zero for real data.
"""
import torch

__all__ = ['liq_fake_quant', 'round_ste']

_MIN_BITS, _MAX_BITS = 2, 8


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` in the forward pass, identity gradient in the backward pass (straight-through)."""
    return torch.round(x).detach() + (x - x.detach())  # same shape as x; value exactly round(x)


def _check_args(x: torch.Tensor, alpha: torch.Tensor, bits, signed) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not _MIN_BITS <= bits <= _MAX_BITS:
        raise ValueError(f'bits={bits!r} is not supported; allowed: integers {_MIN_BITS} to {_MAX_BITS}')
    if not isinstance(signed, bool):
        raise TypeError(f'signed must be a bool, got {signed!r}')
    if not torch.is_tensor(x) or not torch.is_tensor(alpha):
        raise TypeError('x and alpha must be tensors')
    scalar = alpha.dim() == 0 or (alpha.dim() == 1 and alpha.numel() == 1)
    per_channel = alpha.dim() == 1 and x.dim() >= 1 and alpha.shape[0] == x.shape[0]
    if not (scalar or per_channel):
        raise ValueError(f'alpha must be a scalar or have shape (x.shape[0],) = ({x.shape[0] if x.dim() else "-"},)'
                         f'; got alpha.shape={tuple(alpha.shape)} for x.shape={tuple(x.shape)}')


def _as_broadcast(alpha: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """alpha as a scalar, or (C,) viewed as (C, 1, ..., 1) to broadcast along dim 0 of x."""
    if alpha.numel() == 1 and not (x.dim() >= 1 and alpha.dim() == 1 and x.shape[0] == 1):
        return alpha.reshape(())
    return alpha.reshape((-1,) + (1,) * (x.dim() - 1))


def _levels(v: torch.Tensor, q: int, signed: bool) -> torch.Tensor:
    """Quantized normalized value: 2 * w_bar - 1 in [-1, 1] (signed) or x_bar in [0, 1] (unsigned).

    Written as an integer over q, (2 * round(q * w_hat) - q) / q, so that the signed levels are exact mirror
    images and the ends exactly -1 and 1.
    """
    if signed:
        w_hat = 0.5 * (v.clamp(-1, 1) + 1)  # eq. 3, same shape as v
        return (2 * torch.round(w_hat * q) - q) / q  # eq. 5, then the affine map back to [-1, 1]
    return torch.round(v.clamp(0, 1) * q) / q  # eq. 4 and 5


class _LIQFakeQuant(torch.autograd.Function):
    """Explicit forward/backward so that the gradients are exactly eq. 6-7; backward recomputes v = x / alpha
    from the saved inputs instead of keeping extra tensors alive."""

    @staticmethod
    def forward(ctx, x, alpha, bits, signed):
        a = _as_broadcast(alpha, x).to(x.dtype)  # () or (C, 1, ..., 1)
        out = a * _levels(x / a, 2 ** bits - 1, signed)  # same shape as x
        ctx.save_for_backward(x, alpha)
        ctx.bits, ctx.signed = bits, signed
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, alpha = ctx.saved_tensors
        a = _as_broadcast(alpha, x).to(x.dtype)  # () or (C, 1, ..., 1)
        v = x / a  # same shape as x
        if ctx.signed:
            inside = v.abs() < 1
            d_alpha = torch.where(inside, _levels(v, 2 ** ctx.bits - 1, True) - v, torch.sign(x))
        else:
            inside = (v >= 0) & (v < 1)
            d_alpha = torch.where(inside, _levels(v, 2 ** ctx.bits - 1, False) - v, (v >= 1).to(x.dtype))
        grad_x = grad_out * inside.to(grad_out.dtype) if ctx.needs_input_grad[0] else None
        grad_alpha = None
        if ctx.needs_input_grad[1]:
            acc = torch.promote_types(grad_out.dtype, torch.float32)  # sum half precision in float32
            contrib = grad_out.to(acc) * d_alpha.to(acc)  # same shape as x
            if a.dim() == 0:
                grad_alpha = contrib.sum()
            else:
                grad_alpha = contrib.reshape(x.shape[0], -1).sum(dim=1)  # (C,)
            grad_alpha = grad_alpha.reshape(alpha.shape).to(alpha.dtype)
        return grad_x, grad_alpha, None, None


def liq_fake_quant(x: torch.Tensor, alpha: torch.Tensor, bits: int, signed: bool) -> torch.Tensor:
    """De-quantized LIQ output of ``x`` (same shape and dtype as ``x``).

    Args:
        x: any-shape float tensor.
        alpha: the interval, a scalar tensor (or shape (1,)) or one value per slice of dim 0, shape (x.shape[0],).
            It should be positive.
        bits: k, an int in 2..8.
        signed: True for weights (eq. 3, levels in [-alpha, alpha]), False for activations (eq. 4, [0, alpha]).
    """
    _check_args(x, alpha, bits, signed)
    return _LIQFakeQuant.apply(x, alpha, bits, signed)
