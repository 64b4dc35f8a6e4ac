"""Switching a model's fake quantization on and off in one call.

Every quantizer (a :class:`~mmaqd.quantization.quantizers.base.BaseQuantizer`) has an ``enabled`` flag; a
disabled quantizer returns its input unchanged, so a converted model with all quantizers off computes exactly
what the full-precision model does (e.g. to evaluate the FP checkpoint a quantized model is fine-tuned from).
The flag is a plain attribute, not saved in checkpoints.
"""
from contextlib import contextmanager
from typing import Iterator, Tuple

from torch import nn

from .quantizers.base import BaseQuantizer


def quantizers(model: nn.Module) -> Iterator[Tuple[str, BaseQuantizer]]:
    """Yield ``(module_name, quantizer)`` for every quantizer in ``model`` (each shared one once)."""
    for name, module in model.named_modules():
        if isinstance(module, BaseQuantizer):
            yield name, module


def set_quantization(model: nn.Module, enabled: bool) -> int:
    """Enable or disable every quantizer in ``model``; returns how many quantizers were set."""
    n = 0
    for _, q in quantizers(model):
        q.enabled = bool(enabled)
        n += 1
    return n


@contextmanager
def quantization_disabled(model: nn.Module):
    """Run the body with every quantizer off; each quantizer's own previous state is restored on exit."""
    saved = [(q, q.enabled) for _, q in quantizers(model)]
    try:
        for q, _ in saved:
            q.enabled = False
        yield model
    finally:
        for q, was in saved:
            q.enabled = was
