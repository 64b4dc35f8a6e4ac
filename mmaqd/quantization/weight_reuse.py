"""Quantize each weight once per forward pass, however often its layer runs.

The heads of FCOS and RetinaNet apply the same convs to every FPN level (AQD, arXiv 2007.06919v1, section 3.2: weights
shared across levels, one BN per level), so a plain fake-quantized head quantizes each head weight five times per
forward and back-propagates through five copies of the weight quantizer. The quantized weight ``Q_W(w)`` is the same
each time: inside :func:`reuse_quantized_weights` a quantized layer computes it on its first call and hands the
same tensor to its later calls. Autograd sums the gradients of every use into that one tensor, so the weights,
the quantizer parameters and their gradients are exactly those of quantizing per call; only the repeated work
is gone.

The reuse lasts for the ``with`` block only (one forward pass): outside it, and after it, every call quantizes
afresh, so an optimizer step, a changed quantizer range or a second forward never see a stale weight.
"""
from contextlib import contextmanager

from torch import nn

from .layers.mixin import QuantLayerMixin

__all__ = ['reuse_quantized_weights']


@contextmanager
def reuse_quantized_weights(model: nn.Module):
    """Within the block, each quantized layer of ``model`` quantizes its weight at most once.

    Nested blocks over the same layers are fine: the outermost one owns the cached tensors and drops them on
    exit.
    """
    layers = [m for m in model.modules() if isinstance(m, QuantLayerMixin) and m.weight_reuse is None]
    for m in layers:
        m.weight_reuse = []  # empty: active, nothing quantized yet
    try:
        yield model
    finally:
        for m in layers:
            m.weight_reuse = None
