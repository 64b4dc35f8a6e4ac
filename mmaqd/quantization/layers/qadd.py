"""Add / QAdd: the element-wise add as a module, and its quantized form (both operands and the sum quantized).

Models that want their adds quantized (ResNet residual adds, FPN top-down adds) compute them with an ``Add``
module; :func:`mmaqd.quantization.quantize_model` turns each into a ``QAdd`` when the config asks for a fully
quantized graph (``quantize_adds=True``). ``Add`` has no state, so checkpoint keys do not change.

Closes a gap of the authors' AQD code (github.com/aim-uofa/model-quantization: skip-connection adds were never quantized
in training): the ResNet residual add and the FPN top-down add see quantized operands and produce a quantized sum, as
FQN's fully quantized detector does (Li et al., CVPR 2019, section 3.6; integer export rescales both operands to a
common scale).
"""
from typing import Optional

import torch
from torch import nn

from .mixin import build_role_quantizer, quant_args


class Add(nn.Module):
    """``a + b`` as a module, so that a converter can find and quantize it."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


class QAdd(nn.Module):
    """``Q_out(Q_a(a) + Q_b(b))``; each quantizer is built from its cfg, ``None`` keeps that tensor FP.

    Signedness defaults to ``None`` (decided by the first batch): residual operands and sums may be negative
    before the ReLU. A ``signed`` key in a cfg overrides it.
    """

    def __init__(self, a_quant: Optional[dict] = None, b_quant: Optional[dict] = None,
                 output_quant: Optional[dict] = None):
        super().__init__()
        self.add_module('a_quantizer', build_role_quantizer(a_quant, 'act'))
        self.add_module('b_quantizer', build_role_quantizer(b_quant, 'act'))
        self.add_module('out_quantizer', build_role_quantizer(output_quant, 'act'))

    @classmethod
    def from_float(cls, add: Add, weight_quant: Optional[dict] = None, input_quant: Optional[dict] = None, *,
                   weight_cfg: Optional[dict] = None, act_cfg: Optional[dict] = None) -> 'QAdd':
        """The quantized form of ``add``: ``input_quant`` for both operands and for the sum (an add has no weight;
        ``weight_cfg`` / ``act_cfg``: deprecated names)."""
        weight_quant, input_quant = quant_args(weight_quant, input_quant, weight_cfg, act_cfg, 'QAdd.from_float')
        if not isinstance(add, Add):
            raise TypeError(f'QAdd.from_float needs an Add module, got {type(add).__name__}')
        if weight_quant is not None:
            raise ValueError(f'an add has no weight to quantize; got weight_quant={weight_quant!r}, use None')
        return cls(input_quant, input_quant, input_quant)

    @staticmethod
    def _q(q: Optional[nn.Module], x: torch.Tensor) -> torch.Tensor:
        return x if q is None else q(x)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # a, b: same (broadcastable) shape
        return self._q(self.out_quantizer, self._q(self.a_quantizer, a) + self._q(self.b_quantizer, b))
