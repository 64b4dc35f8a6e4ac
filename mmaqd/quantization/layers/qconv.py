"""QConv2d: a Conv2d whose input and weight pass through fake quantizers, ``conv(Q_X(x), Q_W(w))``, and optionally
its output too, ``Q_Y(conv(Q_X(x), Q_W(w)))`` (the prediction convs of FQN's fully quantized detector).

Implements the quantized convolution of AQD (arXiv 2007.06919v1, eq. 1 and section 3.3; section 4.3 quantizes every conv
of backbone, FPN and heads this way) and FQN's output quantization (Li et al., CVPR 2019, section 3.4; see
:mod:`.mixin`). Bias stays full precision (it is folded at integer export).
"""
from typing import Optional

import torch
from torch import nn

from .mixin import QuantLayerMixin, quant_args


class QConv2d(QuantLayerMixin, nn.Conv2d):
    """``nn.Conv2d`` plus ``weight_quantizer`` / ``act_quantizer`` / ``out_quantizer`` submodules (each may be
    ``None``).

    Takes ``nn.Conv2d``'s arguments, and keyword-only ``weight_quant`` / ``input_quant`` / ``output_quant``: quantizer
    configs (``dict(type='LIQ', bits=4, ...)``) or ``None`` for full precision (``weight_cfg`` / ``act_cfg``:
    deprecated names of the first two). Padding modes, groups and dilation behave as in ``nn.Conv2d``.
    """

    supports_output_quant = True

    def __init__(self, *args, weight_quant: Optional[dict] = None, input_quant: Optional[dict] = None,
                 output_quant: Optional[dict] = None, weight_cfg: Optional[dict] = None,
                 act_cfg: Optional[dict] = None, **kwargs):
        super().__init__(*args, **kwargs)
        weight_quant, input_quant = quant_args(weight_quant, input_quant, weight_cfg, act_cfg, type(self).__name__)
        self._init_quantizers(weight_quant, input_quant, self.out_channels, kwargs.get('device'), kwargs.get('dtype'),
                              output_quant)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, weight_quant: Optional[dict] = None, input_quant: Optional[dict] = None,
                   output_quant: Optional[dict] = None, *, weight_cfg: Optional[dict] = None,
                   act_cfg: Optional[dict] = None) -> 'QConv2d':
        """A QConv2d that shares ``conv``'s weight/bias Parameter objects (``conv`` itself is not changed).

        A subclass of ``nn.Conv2d`` is accepted, but its own ``forward`` is not carried over; choosing which
        types may be converted is :func:`mmaqd.quantization.quantize_model`'s job (its layer map).
        """
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f'{cls.__name__}.from_float needs an nn.Conv2d, got {type(conv).__name__}')
        if isinstance(conv, QuantLayerMixin):
            raise TypeError(f'{type(conv).__name__} is already quantized')
        weight_quant, input_quant = quant_args(weight_quant, input_quant, weight_cfg, act_cfg,
                                               f'{cls.__name__}.from_float')
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
                padding_mode=conv.padding_mode, device='meta', weight_quant=weight_quant, input_quant=input_quant,
                output_quant=output_quant)
        return q._adopt(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, C_in, H, W)
        y = self._conv_forward(self.quantized_input(x), self.quantized_weight(), self.bias)  # (N, C_out, H', W')
        return self.quantized_output(y)
