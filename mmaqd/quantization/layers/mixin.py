"""What the quantized layers (QConv2d, QLinear, QConvBN) share: building their quantizers and applying them.

A quantized layer computes ``op(Q_X(x), Q_W(w))`` (AQD, arXiv 2007.06919v1, eq. 1, LIQ in section 3.3): the weight
quantizer Q_W sees the layer's weight (dim 0 = output channels), the input quantizer Q_X sees the layer's input.
Optionally an output quantizer Q_Y also quantizes the result, ``Q_Y(op(Q_X(x), Q_W(w)))``: FQN quantizes "all
activations ... from the normalized input, to the final predictions feeding into anchor regression and non-maximum
suppression" (FQN, Li et al., CVPR 2019, section 3.4). Every other activation is quantized where it is consumed (the
next layer's input quantizer, a QAdd); a prediction has no consumer inside the network, hence the output quantizer
of the prediction convs (``QuantConfig.output_layers``). Each may be ``None``, which keeps that tensor in full
precision.

The arguments are quantizer configs named ``weight_quant``, ``input_quant`` and ``output_quant``
(``dict(type='LIQ', bits=4, ...)``); ``weight_cfg`` / ``act_cfg`` are their deprecated names (``act_cfg`` means an
activation *layer* everywhere else in OpenMMLab). The submodules keep the names ``weight_quantizer``,
``act_quantizer`` (the input's) and ``out_quantizer``, which are the state_dict keys of every quantized checkpoint.

Signedness defaults: weights are symmetric around 0 (``signed=True``, AQD eq. 3); activations are left to
the first batch (``signed=None``), since a layer's input may be a ReLU output (unsigned) or a normalized image /
residual sum (signed). A ``signed`` key in a config overrides either default. Every quantizer is told its role
(``role='weight'`` / ``'act'``, e.g. LIQ eq. 3 vs eq. 4).
"""
from typing import Optional, Tuple

import torch
from torch import nn

from ..deprecation import deprecated_arg
from ..quantizers.utils import ROLES
from ..registry import build_quantizer


def build_role_quantizer(cfg: Optional[dict], role: str, **default_args) -> Optional[nn.Module]:
    """:func:`build_quantizer` with the defaults of ``role`` (``'weight'`` or ``'act'``).

    Defaults (a key in ``cfg`` wins): ``signed=True`` for weights, ``None`` (first batch decides) for
    activations; ``role=role``.
    """
    if role not in ROLES:
        raise ValueError(f"role={role!r} is not supported; allowed: 'weight', 'act'")
    default_args.setdefault('signed', True if role == 'weight' else None)
    default_args.setdefault('role', role)
    return build_quantizer(cfg, **default_args)


def quant_args(weight_quant: Optional[dict], input_quant: Optional[dict], weight_cfg: Optional[dict],
               act_cfg: Optional[dict], where: str) -> Tuple[Optional[dict], Optional[dict]]:
    """``(weight_quant, input_quant)``, taken from their deprecated names ``weight_cfg`` / ``act_cfg`` (with a
    warning) when those are given."""
    return (deprecated_arg('weight_cfg', weight_cfg, 'weight_quant', weight_quant, where, stacklevel=3),
            deprecated_arg('act_cfg', act_cfg, 'input_quant', input_quant, where, stacklevel=3))


class QuantLayerMixin:
    """Mixin for ``nn.Module`` subclasses that own ``weight`` and the quantizers ``weight_quantizer``,
    ``act_quantizer`` (of the input) and ``out_quantizer`` (of the output; ``None`` for most layers)."""

    #: whether the layer's quantized output may be used (``QuantConfig.output_layers``); conversion checks it
    supports_output_quant = False

    def _init_quantizers(self, weight_quant: Optional[dict], input_quant: Optional[dict], num_channels: int,
                         device=None, dtype=None, output_quant: Optional[dict] = None) -> None:
        """Build and register ``weight_quantizer`` / ``act_quantizer`` / ``out_quantizer`` (``None`` where the cfg
        is ``None``)."""
        if output_quant is not None and not self.supports_output_quant:
            raise ValueError(f'{type(self).__name__} does not support output quantization; got '
                             f'output_quant={output_quant!r}, use None')
        self.add_module('weight_quantizer', build_role_quantizer(weight_quant, 'weight', num_channels=num_channels))
        self.add_module('act_quantizer', build_role_quantizer(input_quant, 'act'))
        self.add_module('out_quantizer', build_role_quantizer(output_quant, 'act'))
        if device is not None and torch.device(device).type == 'meta':
            return  # from_float builds on meta, then moves the quantizers next to the real weight
        self._move_quantizers(device, dtype)

    def _move_quantizers(self, device=None, dtype=None) -> None:
        for q in (self.weight_quantizer, self.act_quantizer, self.out_quantizer):
            if q is not None and (device is not None or dtype is not None):
                q.to(device=device, dtype=dtype)  # only floating-point tensors change dtype

    def _adopt(self, layer: nn.Module) -> 'QuantLayerMixin':
        """Take ``layer``'s own Parameter objects (same state_dict keys, same optimizer entries) and training flag."""
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
        """``Q_X(x)``, or ``x`` when the input stays full precision."""
        return x if self.act_quantizer is None else self.act_quantizer(x)

    def quantized_output(self, y: torch.Tensor) -> torch.Tensor:
        """``Q_Y(y)`` of the layer's result ``y``, or ``y`` when the output stays full precision (most layers)."""
        return y if self.out_quantizer is None else self.out_quantizer(y)
