"""A floating-point twin of an :class:`~mmaqd.deploy.network.IntegerNetwork`, the baseline of the GPU speed
benchmark: the same graph (every conv at its shape, stride, padding and groups, once per FPN level it runs at;
the adds, ReLUs, max-pooling and upsampling) in bf16 or fp32, with no quantization.

It is built from the artefact alone (torch only), so a GPU machine without mmdet can time the integer network
against the detector's own float network. Its weights are the integer weights' values ``v + mu`` (the artefact
holds no float scales), each conv's scaled by ``1 / (max |v| sqrt(K))`` so that activations stay finite through
the network; its outputs are not the detector's predictions: it is for timing, not for accuracy.
Each output stage of a conv becomes a conv with a bias (and a ReLU where the stage has one), as a float detector
with its BN folded runs.
"""
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import unpack_codes
from .network import IntConv, IntegerNetwork, layer_key

__all__ = ['FloatTwin']


class FloatTwin(nn.Module):
    """Runs ``net``'s node list in floating point (``dtype``, e.g. ``torch.bfloat16``); see the module docstring."""

    def __init__(self, net: IntegerNetwork, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.net, self.dtype = net, dtype
        self.weights = nn.ParameterDict()
        self.biases = nn.ParameterDict()
        for spec in net.layer_specs:
            layer = net.layers[layer_key(spec['name'])]
            if isinstance(layer, IntConv):
                q = (1 << spec['w_bits']) - 1
                shape = spec['w_shape']
                codes = unpack_codes(layer.weight, spec['w_bits'], shape[1] * shape[2] * shape[3])  # (C_out, K)
                v = codes.float() * 2 - q + layer.w_offset.float().view(-1, 1) / 2 ** spec['offset_frac_bits']
                v = v / (v.abs().max().clamp(min=1e-6) * v.shape[1] ** 0.5)  # (C_out, K): keeps activations finite
                self.weights[layer_key(spec['name'])] = nn.Parameter(v.view(shape).to(dtype), requires_grad=False)
                self.biases[layer_key(spec['name'])] = nn.Parameter(torch.zeros(shape[0], dtype=dtype),
                                                                    requires_grad=False)
            elif spec['type'] == 'float_conv':
                self.weights[layer_key(spec['name'])] = nn.Parameter(layer.weight.to(dtype), requires_grad=False)
                self.biases[layer_key(spec['name'])] = nn.Parameter(layer.conv_bias.to(dtype), requires_grad=False)

    def _layer(self, node: dict, args: List[torch.Tensor]) -> List[torch.Tensor]:
        spec = self.net.layers[layer_key(node['layer'])].spec
        kind = spec['type']
        if kind in ('conv', 'float_conv'):
            key = layer_key(spec['name'])
            y = F.conv2d(args[0], self.weights[key], self.biases[key], spec['stride'], spec['padding'],
                         spec['dilation'], spec['groups'])
            outs = spec.get('outputs', [dict(relu=False)])
            return [F.relu(y) if o.get('relu') else y for o in outs]
        if kind == 'add':
            return [args[0] + args[1] if len(args) > 1 else args[0]]
        if kind in ('quantize', 'dequant'):
            return [F.relu(args[0]) if spec.get('relu') else args[0]]
        raise ValueError(f'FloatTwin: layer type {kind!r} is not supported')

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> Dict[str, List[torch.Tensor]]:  # x: (N, 3, H, W) float
        env = {self.net.input_name: x.to(self.dtype)}
        for node in self.net.nodes:
            args = [env[n] for n in node['inputs']]
            op = node['op']
            if op == 'layer':
                results = self._layer(node, args)
            elif op == 'maxpool':
                results = [F.max_pool2d(args[0], node['kernel'], node['stride'], node['padding'])]
            elif op == 'upsample':
                if node.get('scale_factor') is not None:
                    results = [F.interpolate(args[0], scale_factor=node['scale_factor'], mode='nearest')]
                else:
                    results = [F.interpolate(args[0], size=env[node['like']].shape[2:], mode='nearest')]
            elif op == 'relu':
                results = [F.relu(args[0])]
            else:
                raise ValueError(f'FloatTwin: unknown node op {op!r}')
            env.update(zip(node['outputs'], results))
        pairs = zip(self.net.output_names, self.net.output_tensors)
        return {name: [env[t] for t in tensors] for name, tensors in pairs}
