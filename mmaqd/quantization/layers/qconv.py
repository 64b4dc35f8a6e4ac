"""QConv2d: a Conv2d whose input and weight pass through fake quantizers, ``conv(Q_X(x), Q_W(w))``.

Implements the quantized convolution of AQD (arXiv 2007.06919v1, eq. 1 and section 3.3; section 4.3 quantizes every conv
of backbone, FPN and heads this way). Bias stays full precision (it is folded at integer export).
"""
from typing import Optional

import torch
from torch import nn

from .mixin import QuantLayerMixin


class QConv2d(QuantLayerMixin, nn.Conv2d):
    """``nn.Conv2d`` plus ``weight_quantizer`` / ``act_quantizer`` submodules (either may be ``None``).

    Takes ``nn.Conv2d``'s arguments, and keyword-only ``weight_cfg`` / ``act_cfg``: quantizer configs
    (``dict(type='LIQ', bits=4, ...)``) or ``None`` for full precision. Padding modes, groups and dilation
    behave as in ``nn.Conv2d``.
    """

    def __init__(self, *args, weight_cfg: Optional[dict] = None, act_cfg: Optional[dict] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_quantizers(weight_cfg, act_cfg, self.out_channels, kwargs.get('device'), kwargs.get('dtype'))

    @classmethod
    def from_float(cls, conv: nn.Conv2d, weight_cfg: Optional[dict] = None,
                   act_cfg: Optional[dict] = None) -> 'QConv2d':
        """A QConv2d that shares ``conv``'s weight/bias Parameter objects (``conv`` itself is not changed).

        A subclass of ``nn.Conv2d`` is accepted, but its own ``forward`` is not carried over; choosing which
        types may be converted is :func:`mmaqd.quantization.convert.quantize_model`'s job.
        """
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f'QConv2d.from_float needs an nn.Conv2d, got {type(conv).__name__}')
        if isinstance(conv, QuantLayerMixin):
            raise TypeError(f'{type(conv).__name__} is already quantized')
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
                padding_mode=conv.padding_mode, device='meta', weight_cfg=weight_cfg, act_cfg=act_cfg)
        return q._adopt(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, C_in, H, W)
        return self._conv_forward(self.quantized_input(x), self.quantized_weight(), self.bias)  # (N, C_out, H', W')
