"""QLinear: a Linear layer whose input and weight pass through fake quantizers, ``linear(Q_X(x), Q_W(w))``.

The fully connected counterpart of :class:`QConv2d` (AQD, arXiv 2007.06919v1, eq. 1, section 3.3). Bias stays full
precision.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .mixin import QuantLayerMixin, quant_args


class QLinear(QuantLayerMixin, nn.Linear):
    """``nn.Linear`` plus ``weight_quantizer`` / ``act_quantizer`` submodules (either may be ``None``).

    Takes ``nn.Linear``'s arguments, and keyword-only ``weight_quant`` / ``input_quant`` (quantizer configs or
    ``None`` for full precision; ``weight_cfg`` / ``act_cfg``: deprecated names).
    """

    def __init__(self, *args, weight_quant: Optional[dict] = None, input_quant: Optional[dict] = None,
                 weight_cfg: Optional[dict] = None, act_cfg: Optional[dict] = None, **kwargs):
        super().__init__(*args, **kwargs)
        weight_quant, input_quant = quant_args(weight_quant, input_quant, weight_cfg, act_cfg, type(self).__name__)
        self._init_quantizers(weight_quant, input_quant, self.out_features, kwargs.get('device'),
                              kwargs.get('dtype'))

    @classmethod
    def from_float(cls, linear: nn.Linear, weight_quant: Optional[dict] = None, input_quant: Optional[dict] = None,
                   *, weight_cfg: Optional[dict] = None, act_cfg: Optional[dict] = None) -> 'QLinear':
        """A QLinear that shares ``linear``'s weight/bias Parameter objects (``linear`` itself is not changed)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f'QLinear.from_float needs an nn.Linear, got {type(linear).__name__}')
        if isinstance(linear, QuantLayerMixin):
            raise TypeError(f'{type(linear).__name__} is already quantized')
        weight_quant, input_quant = quant_args(weight_quant, input_quant, weight_cfg, act_cfg, 'QLinear.from_float')
        q = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device='meta',
                weight_quant=weight_quant, input_quant=input_quant)
        return q._adopt(linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (..., in_features)
        return F.linear(self.quantized_input(x), self.quantized_weight(), self.bias)  # (..., out_features)
