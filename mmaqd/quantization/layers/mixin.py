"""What QConv2d and QLinear share: building their two quantizers and applying them.

A quantized layer computes ``op(Q_X(x), Q_W(w))`` (AQD, arXiv 2007.06919v1, eq. 1, LIQ in section 3.3): the weight
quantizer Q_W sees the layer's weight (dim 0 = output channels), the activation quantizer Q_X sees the layer's input.
Either may be ``None``, which keeps that side in full precision.

Signedness defaults: weights are symmetric around 0 (``signed=True``, AQD eq. 3); activations are left to
the first batch (``signed=None``), since a layer's input may be a ReLU output (unsigned) or a normalized image /
residual sum (signed). A ``signed`` key in a config overrides either default. Every quantizer is told its role
(``mode='weight'`` / ``'act'``, e.g. LIQ eq. 3 vs eq. 4).
"""
from typing import Optional

import torch
from torch import nn

from ..registry import build_quantizer


def build_role_quantizer(cfg: Optional[dict], role: str, **default_args) -> Optional[nn.Module]:
    """:func:`build_quantizer` with the defaults of ``role`` (``'weight'`` or ``'act'``).

    Defaults (a key in ``cfg`` wins): ``signed=True`` for weights, ``None`` (first batch decides) for
    activations; ``mode=role``.
    """
    if role not in ('weight', 'act'):
        raise ValueError(f"role={role!r} is not supported; allowed: 'weight', 'act'")
    default_args.setdefault('signed', True if role == 'weight' else None)
    default_args.setdefault('mode', role)
    return build_quantizer(cfg, **default_args)


class QuantLayerMixin:
    """Mixin for ``nn.Module`` subclasses that own ``weight``, ``weight_quantizer`` and ``act_quantizer``."""

    def _init_quantizers(self, weight_cfg: Optional[dict], act_cfg: Optional[dict], num_channels: int,
                         device=None, dtype=None) -> None:
        """Build and register ``weight_quantizer`` / ``act_quantizer`` (``None`` where the cfg is ``None``)."""
        self.add_module('weight_quantizer', build_role_quantizer(weight_cfg, 'weight', num_channels=num_channels))
        self.add_module('act_quantizer', build_role_quantizer(act_cfg, 'act'))
        if device is not None and torch.device(device).type == 'meta':
            return  # from_float builds on meta, then moves the quantizers next to the real weight
        self._move_quantizers(device, dtype)

    def _move_quantizers(self, device=None, dtype=None) -> None:
        for q in (self.weight_quantizer, self.act_quantizer):
            if q is not None and (device is not None or dtype is not None):
                q.to(device=device, dtype=dtype)  # only floating-point tensors change dtype

    def _adopt(self, layer: nn.Module) -> 'QuantLayerMixin':
        """Take ``layer``'s own Parameter objects (same state_dict keys, same optimizer entries) and mode."""
        self.weight = layer.weight
        if layer.bias is not None:
            self.bias = layer.bias
        self._move_quantizers(layer.weight.device, layer.weight.dtype)
        self.train(layer.training)
        return self

    #: ``None``, or while :func:`mmaqd.quantization.reuse_quantized_weights` is active a list holding the
    #: quantized weight of this forward pass once computed (a class default; set on instances only)
    weight_reuse = None

    def quantized_weight(self) -> torch.Tensor:
        """The weight the op computes with: ``Q_W(weight)``, or ``weight`` when weights stay full precision."""
        if self.weight_quantizer is None:
            return self.weight
        reuse = self.weight_reuse
        if reuse is None:
            return self.weight_quantizer(self.weight)
        if not reuse:
            reuse.append(self.weight_quantizer(self.weight))
        return reuse[0]

    def quantized_input(self, x: torch.Tensor) -> torch.Tensor:
        """``Q_X(x)``, or ``x`` when activations stay full precision."""
        return x if self.act_quantizer is None else self.act_quantizer(x)
