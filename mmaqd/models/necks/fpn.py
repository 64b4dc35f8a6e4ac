"""FPN whose top-down adds are ``Add`` modules (:class:`AddModuleFPN`), so a fully quantized graph can quantize them.

FQN (Li et al., CVPR 2019, section 3.6) quantizes the FPN's element-wise adds and uses nearest upsampling (mmdet's
default here); the public AQD code (github.com/aim-uofa/model-quantization) left the adds in full precision.
``AddModuleFPN`` is a float network: it computes exactly mmdet's FPN, with the same state_dict keys, until
``quantize_model(..., quantize_adds=True)`` turns each ``Add`` into a ``QAdd``.

``QFPN``, its name before, is registered too (a deprecated alias: a config naming it builds, with a warning).
"""
from typing import Tuple

import torch.nn.functional as F
from mmdet.models.necks import FPN
from mmdet.registry import MODELS
from torch import Tensor, nn

from mmaqd.quantization.layers import Add

from ..deprecated_names import register_deprecated_name


@MODELS.register_module()
class AddModuleFPN(FPN):
    """mmdet's FPN (same arguments) with ``self.top_down_adds[i - 1]`` merging level i into level i - 1."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.top_down_adds = nn.ModuleList(Add() for _ in range(len(self.lateral_convs) - 1))

    def forward(self, inputs: Tuple[Tensor]) -> tuple:
        if len(inputs) != len(self.in_channels):
            raise ValueError(f'{type(self).__name__} got {len(inputs)} feature maps, expected {len(self.in_channels)} '
                             f'(in_channels={self.in_channels})')
        laterals = [conv(inputs[i + self.start_level]) for i, conv in enumerate(self.lateral_convs)]
        for i in range(len(laterals) - 1, 0, -1):
            if 'scale_factor' in self.upsample_cfg:
                up = F.interpolate(laterals[i], **self.upsample_cfg)
            else:
                up = F.interpolate(laterals[i], size=laterals[i - 1].shape[2:], **self.upsample_cfg)
            laterals[i - 1] = self.top_down_adds[i - 1](laterals[i - 1], up)
        return self._outputs(inputs, laterals)

    def _outputs(self, inputs: Tuple[Tensor], laterals: list) -> tuple:
        """The output convs and extra levels, as mmdet's FPN computes them."""
        used = len(laterals)
        outs = [self.fpn_convs[i](laterals[i]) for i in range(used)]
        if self.num_outs > used:
            if not self.add_extra_convs:
                for _ in range(self.num_outs - used):
                    outs.append(F.max_pool2d(outs[-1], 1, stride=2))
                return tuple(outs)
            source = {'on_input': lambda: inputs[self.backbone_end_level - 1],
                      'on_lateral': lambda: laterals[-1], 'on_output': lambda: outs[-1]}[self.add_extra_convs]()
            outs.append(self.fpn_convs[used](source))
            for i in range(used + 1, self.num_outs):
                outs.append(self.fpn_convs[i](F.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]))
        return tuple(outs)


QFPN = register_deprecated_name(AddModuleFPN, 'QFPN', 'neck')
