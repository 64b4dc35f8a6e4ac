"""QLinear: a Linear layer whose input and weight pass through fake quantizers, ``linear(Q_X(x), Q_W(w))``.

The fully connected counterpart of :class:`QConv2d` (AQD, arXiv 2007.06919v1, eq. 1, section 3.3). Bias stays full
precision.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .mixin import QuantLayerMixin


class QLinear(QuantLayerMixin, nn.Linear):
    """``nn.Linear`` plus ``weight_quantizer`` / ``act_quantizer`` submodules (either may be ``None``).

    Takes ``nn.Linear``'s arguments, and keyword-only ``weight_cfg`` / ``act_cfg`` (quantizer configs or
    ``None`` for full precision).
    """

    def __init__(self, *args, weight_cfg: Optional[dict] = None, act_cfg: Optional[dict] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_quantizers(weight_cfg, act_cfg, self.out_features, kwargs.get('device'), kwargs.get('dtype'))

    @classmethod
    def from_float(cls, linear: nn.Linear, weight_cfg: Optional[dict] = None,
                   act_cfg: Optional[dict] = None) -> 'QLinear':
        """A QLinear that shares ``linear``'s weight/bias Parameter objects (``linear`` itself is not changed)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f'QLinear.from_float needs an nn.Linear, got {type(linear).__name__}')
        if isinstance(linear, QuantLayerMixin):
            raise TypeError(f'{type(linear).__name__} is already quantized')
        q = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device='meta',
                weight_cfg=weight_cfg, act_cfg=act_cfg)
        return q._adopt(linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (..., in_features)
        return F.linear(self.quantized_input(x), self.quantized_weight(), self.bias)  # (..., out_features)
