"""ResNet whose residual adds are ``Add`` modules (:class:`AddModuleResNet`), so a fully quantized graph can
quantize them. A float network: nothing here is quantized until :func:`mmaqd.quantization.quantize_model` converts it
(torchvision's ``QuantizableResNet`` plays the same part for PyTorch's own quantization).

The authors' AQD code (github.com/aim-uofa/model-quantization) never quantized skip-connection adds; FQN
(Li et al., CVPR 2019, section 3.6) quantizes them with a fixed-point rescale of both operands. Here the blocks compute
``relu(add(out, identity))`` with an :class:`mmaqd.quantization.layers.Add`, which
``quantize_model(..., quantize_adds=True)`` turns into a ``QAdd``. With no conversion the network computes exactly
mmdet's ResNet and has the same state_dict keys.

``QResNet``, its name before, is registered too (a deprecated alias: a config naming it builds, with a warning).
"""
import torch.utils.checkpoint as cp
from mmdet.models.backbones.resnet import BasicBlock, Bottleneck, ResNet
from mmdet.registry import MODELS

from mmaqd.quantization.layers import Add

from ..deprecated_names import register_deprecated_name


class _AddModuleBlock:
    """What both blocks add to mmdet's: ``self.add`` (an :class:`Add`) and mmdet's forward around
    :meth:`residual` (gradient checkpointing when ``with_cp``, then the ReLU after the add)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add = Add()

    def residual(self, x):
        """``self.add(branch(x), identity)``: the block before its last ReLU."""
        raise NotImplementedError

    def forward(self, x):
        out = cp.checkpoint(self.residual, x) if self.with_cp and x.requires_grad else self.residual(x)
        return self.relu(out)


class AddBasicBlock(_AddModuleBlock, BasicBlock):
    """mmdet's BasicBlock with the residual add as a module (``self.add``)."""

    def residual(self, x):
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.add(out, identity)


class AddBottleneck(_AddModuleBlock, Bottleneck):
    """mmdet's Bottleneck (plugins included) with the residual add as a module (``self.add``)."""

    def residual(self, x):
        out = self.relu(self.norm1(self.conv1(x)))
        if self.with_plugins:
            out = self.forward_plugin(out, self.after_conv1_plugin_names)
        out = self.relu(self.norm2(self.conv2(out)))
        if self.with_plugins:
            out = self.forward_plugin(out, self.after_conv2_plugin_names)
        out = self.norm3(self.conv3(out))
        if self.with_plugins:
            out = self.forward_plugin(out, self.after_conv3_plugin_names)
        identity = x if self.downsample is None else self.downsample(x)
        return self.add(out, identity)


@MODELS.register_module()
class AddModuleResNet(ResNet):
    """mmdet's ResNet (same arguments, same checkpoint keys) built from blocks whose residual add is a module."""

    arch_settings = {
        18: (AddBasicBlock, (2, 2, 2, 2)),
        34: (AddBasicBlock, (3, 4, 6, 3)),
        50: (AddBottleneck, (3, 4, 6, 3)),
        101: (AddBottleneck, (3, 4, 23, 3)),
        152: (AddBottleneck, (3, 8, 36, 3)),
    }


QResNet = register_deprecated_name(AddModuleResNet, 'QResNet', 'backbone')
