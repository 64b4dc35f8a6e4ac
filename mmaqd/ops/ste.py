"""Straight-through estimators and gradient scaling: a value in the forward pass, another gradient in the backward
pass (Bengio et al., arXiv 1308.3432), written as ``value.detach() + (surrogate - surrogate.detach())`` so that the
forward value is exactly ``value``. The style of brevitas's ``function/ops_ste.py``."""
import torch

__all__ = ['round_ste', 'scale_grad', 'ste']


def ste(value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """``value`` in the forward pass, the gradient of ``surrogate`` (same shape) in the backward pass."""
    return value.detach() + (surrogate - surrogate.detach())


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` in the forward pass, identity gradient in the backward pass (straight-through)."""
    return ste(torch.round(x), x)  # same shape as x; value exactly round(x)


def scale_grad(p: torch.Tensor, scale: float) -> torch.Tensor:
    """``p`` in the forward pass, gradient multiplied by ``scale`` in the backward pass (LSQ's g, Esser et al.,
    ICLR 2020, section 2.2)."""
    return ste(p, p * scale)  # value exactly p
