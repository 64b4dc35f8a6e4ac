"""The integer network: a plain torch module that runs a converted detector's graph in integers.

Integer-only inference of a quantized detector as AQD claims it (arXiv 2007.06919, abstract and section 3:
convolutions, normalization and skip connections in fixed point), with Jacob et al.'s arithmetic (CVPR 2018,
section 2.2-2.4). It needs torch and :mod:`mmaqd.ops` only (no mmdet, mmcv or mmengine), so it runs wherever
PyTorch is installed. It is built from a JSON-able spec (``layers`` and ``nodes``, written by
:mod:`mmaqd.deploy.converter`) and loads its integer tensors from a state_dict:

* ``quantize``: the normalized float image -> integer values on the first quantizer's grid (the only float ->
  integer step of an integer-only graph; also used after a float island);
* ``conv``: an integer conv (:func:`mmaqd.ops.quant_conv2d`) whose accumulator goes through one or more output
  stages, one per consumer of its output: requantization to the consumer's grid (BN, ReLU and the quantizer in
  one fixed-point multiply, per FPN level for a shared head conv), the raw accumulator of a prediction conv, or a
  dequantized float for a float island;
* ``add``: the requantizing add (:func:`mmaqd.ops.quant_add`), also a rescale of one integer tensor onto another
  grid;
* ``maxpool``, ``upsample``: on integers (they commute with the monotone quantizers);
* float islands (``float_conv``, ``dequant``, ``relu``) where a layer was trained in full precision.

Integer values on a signed LIQ grid are the odd ``2c - q``, on a zero-level signed grid ``j`` in -m..m and codes
``c`` on an unsigned grid, so zero padding is exact. ``forward`` returns, per head output and FPN level, int32
accumulators (or floats for a float island);
:meth:`IntegerNetwork.dequantize` turns them into the prediction convs' real outputs.
"""
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import liq_fake_quant, prepack_conv_weight, quant_add, quant_conv2d, requantize_values

__all__ = ['IntegerNetwork', 'layer_key']

_I32 = torch.int32


def layer_key(name: str) -> str:
    """A module-name-safe key for a layer named ``name`` (dots are not allowed in module names)."""
    return name.replace('.', '__')


def _buf(module: nn.Module, name: str, shape, dtype) -> None:
    module.register_buffer(name, torch.zeros(shape, dtype=dtype))


class IntConv(nn.Module):
    """An integer conv with its output stages; its weight is shared by every level it runs on.

    Buffers: ``weight`` (C_out, bytes) uint8 packed codes, ``w_offset`` (C_out,) int32, and for output j:
    ``bias_{j}`` (L, C_out): int32 in accumulator units (kinds ``requant`` and ``acc``) or float64 (kind ``float``);
    ``m0_{j}`` / ``shift_{j}`` (L, C_out) int32 (kind ``requant``); ``scale_{j}`` (L, C_out) float64: kind ``acc``
    returns ``acc + bias`` whose real value is ``scale * (acc + bias)``, kind ``float`` returns
    ``scale * acc + bias``.
    """

    def __init__(self, spec: dict):
        super().__init__()
        self.spec = spec
        c_out = spec['w_shape'][0]
        levels = spec['num_levels']
        nbytes = spec['w_bytes']
        _buf(self, 'weight', (c_out, nbytes), torch.uint8)
        _buf(self, 'w_offset', (c_out,), _I32)
        for j, out in enumerate(spec['outputs']):
            kind = out['kind']
            if kind not in ('requant', 'acc', 'float'):
                raise ValueError(f"IntConv {spec['name']}: unknown output kind {kind!r}")
            _buf(self, f'bias_{j}', (levels, c_out), _I32 if kind != 'float' else torch.float64)
            if kind == 'requant':
                _buf(self, f'm0_{j}', (levels, c_out), _I32)
                _buf(self, f'shift_{j}', (levels, c_out), _I32)
            else:
                _buf(self, f'scale_{j}', (levels, c_out), torch.float64)

    def _prepacked(self) -> Optional[torch.Tensor]:
        """The weight in the compiled kernel's layout, made once per loaded weight (``None`` without it)."""
        key = (self.weight.data_ptr(), self.weight._version)
        if getattr(self, '_prepacked_key', None) != key:
            s = self.spec
            self._prepacked_weight = prepack_conv_weight(self.weight, s['w_bits'], s['w_shape'], s['groups'])
            self._prepacked_key = key
        return self._prepacked_weight

    def _conv(self, x: torch.Tensor, **stage) -> torch.Tensor:
        s = self.spec
        return quant_conv2d(x, self.weight, s['w_bits'], s['w_shape'], self.w_offset if s['has_offset'] else None,
                            s['frac_bits'], s['offset_frac_bits'], stride=s['stride'], padding=s['padding'],
                            dilation=s['dilation'], groups=s['groups'], prepacked=self._prepacked(), **stage)

    def forward(self, x: torch.Tensor, level: int) -> List[torch.Tensor]:  # x: (N, C_in, H, W) int
        outs = self.spec['outputs']
        if len(outs) == 1 and outs[0]['kind'] == 'requant':  # the fused op
            o = outs[0]
            return [self._conv(x, bias=self.bias_0[level], multiplier=self.m0_0[level],
                               shift=self.shift_0[level], zero_point=o['zero_point'], qmin=o['qmin'],
                               qmax=o['qmax'], out_levels=o['levels'], out_signed=o['signed'])]
        acc = self._conv(x)  # (N, C_out, H', W') int32
        results = []
        for j, o in enumerate(outs):
            bias = getattr(self, f'bias_{j}')[level]
            if o['kind'] == 'requant':
                results.append(requantize_values(acc, getattr(self, f'm0_{j}')[level],
                                                 getattr(self, f'shift_{j}')[level], bias, o['zero_point'],
                                                 o['qmin'], o['qmax'], o['levels'], o['signed']))
            elif o['kind'] == 'acc':
                results.append((acc.to(torch.int64) + bias.to(torch.int64).view(1, -1, 1, 1)).to(_I32))
            else:
                real = acc.to(torch.float64) * getattr(self, f'scale_{j}')[level].view(1, -1, 1, 1) \
                    + bias.view(1, -1, 1, 1)
                results.append(real.float().clamp(min=0) if o['relu'] else real.float())
        return results


class IntAdd(nn.Module):
    """Requantizing add (or, with one input, a rescale); scalar int32 buffers ``a_m0, a_shift, b_m0, b_shift,
    bias, m0, shift``."""

    def __init__(self, spec: dict):
        super().__init__()
        self.spec = spec
        for name in ('a_m0', 'a_shift', 'b_m0', 'b_shift', 'bias', 'm0', 'shift'):
            _buf(self, name, (), _I32)

    def forward(self, a: torch.Tensor, b: Optional[torch.Tensor] = None) -> torch.Tensor:
        s = self.spec
        return quant_add(a, self.a_m0, self.a_shift, b, self.b_m0 if b is not None else None,
                         self.b_shift if b is not None else None, s['left_shift'], self.bias, self.m0, self.shift,
                         s['zero_point'], s['qmin'], s['qmax'], s['levels'], s['signed'])


class Quantize(nn.Module):
    """Float -> integer values on a LIQ activation grid, exactly as the trained quantizer rounds (``alpha``)."""

    def __init__(self, spec: dict):
        super().__init__()
        self.spec = spec
        _buf(self, 'alpha', (), torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: float (N, C, H, W)
        s = self.spec
        if s['relu']:
            x = x.clamp(min=0)
        zero_level = bool(s.get('zero_level', False)) and s['signed']
        q = (1 << s['bits']) - 1
        steps = (q - 1) // 2 if zero_level else q  # alpha / scale
        out = liq_fake_quant(x.float(), self.alpha, s['bits'], s['signed'], zero_level)
        v = torch.round(out * steps / self.alpha).to(_I32)
        # channels-last from here on: the compiled convs read NHWC and keep their input's format, so the integer
        # tensors of the graph are never transposed again
        return v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v


class FloatConv(nn.Module):
    """A layer trained in full precision (a float island): conv, then per level ``scale * y + bias`` (its BN)."""

    def __init__(self, spec: dict):
        super().__init__()
        self.spec = spec
        _buf(self, 'weight', spec['w_shape'], torch.float32)
        _buf(self, 'conv_bias', (spec['w_shape'][0],), torch.float32)
        _buf(self, 'scale', (spec['num_levels'], spec['w_shape'][0]), torch.float32)
        _buf(self, 'bias', (spec['num_levels'], spec['w_shape'][0]), torch.float32)

    def forward(self, x: torch.Tensor, level: int) -> List[torch.Tensor]:
        s = self.spec
        y = F.conv2d(x.float(), self.weight, self.conv_bias, s['stride'], s['padding'], s['dilation'], s['groups'])
        return [y * self.scale[level].view(1, -1, 1, 1) + self.bias[level].view(1, -1, 1, 1)]


class Dequant(nn.Module):
    """Integer values -> floats, ``scale * v`` (an integer tensor entering a float island)."""

    def __init__(self, spec: dict):
        super().__init__()
        self.spec = spec
        _buf(self, 'scale', (), torch.float64)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        out = (v.to(torch.float64) * self.scale).float()
        return out.clamp(min=0) if self.spec['relu'] else out


_LAYER_TYPES = {'conv': IntConv, 'add': IntAdd, 'quantize': Quantize, 'float_conv': FloatConv, 'dequant': Dequant}


def _maxpool(x: torch.Tensor, node: dict) -> torch.Tensor:
    """Max-pooling of integer values as they are (exact), in channels-last memory: several times faster on the
    CPU, and the next integer conv reads NHWC anyway. CUDA has no integer max-pooling: there it runs in float32,
    exact since |values| < 2^24."""
    if x.is_cuda and not x.is_floating_point():
        return F.max_pool2d(x.float(), node['kernel'], node['stride'], node['padding']).to(x.dtype)
    return F.max_pool2d(x.contiguous(memory_format=torch.channels_last), node['kernel'], node['stride'],
                        node['padding'])


# nearest upsampling of integer values runs in float32: exact, since |values| < 2^24


def _upsample(x: torch.Tensor, like: torch.Tensor, node: dict) -> torch.Tensor:
    kwargs = dict(mode='nearest')
    if node.get('scale_factor') is not None:
        kwargs['scale_factor'] = node['scale_factor']
    else:
        kwargs['size'] = like.shape[2:]
    y = F.interpolate(x.to(torch.float32) if not x.is_floating_point() else x, **kwargs)
    return y if x.is_floating_point() else y.to(x.dtype)


class IntegerNetwork(nn.Module):
    """Runs the node list of a converted detector.

    Args:
        layers: one spec per stateful layer (``type`` in conv, add, quantize, float_conv, dequant; ``name``).
        nodes: the graph in execution order; each ``dict(op=..., inputs=[...], outputs=[...], ...)`` where ``op``
            is ``layer`` (runs ``layers[name]`` at ``level``), ``maxpool``, ``upsample`` or ``relu``.
        input: the name of the float input tensor (the normalized image).
        outputs: per head output (e.g. cls_score, bbox_pred), per level, the name of the tensor it reads.
        output_names: the head outputs' names.
        output_sources: per head output, per level, ``[conv layer name, output index, level]`` of an int32
            accumulator (its scale dequantizes it), or ``None`` for a float output.
        probes: ``{probe: tensor name}``: where each trained quantizer's integer values are (verification).
    """

    def __init__(self, layers: Sequence[dict], nodes: Sequence[dict], input: str, outputs: Sequence[Sequence[str]],
                 output_names: Sequence[str], output_sources: Sequence[Sequence],
                 probes: Optional[Dict[str, str]] = None, **meta):
        super().__init__()
        self.layer_specs = [dict(s) for s in layers]
        self.nodes = [dict(n) for n in nodes]
        self.input_name = input
        self.output_tensors = [list(o) for o in outputs]
        self.output_names = list(output_names)
        self.output_sources = [list(o) for o in output_sources]
        self.probes = dict(probes or {})
        self.meta = meta
        self.layers = nn.ModuleDict()
        for spec in self.layer_specs:
            if spec['type'] not in _LAYER_TYPES:
                raise ValueError(f"IntegerNetwork: layer {spec.get('name')!r} has unknown type {spec['type']!r}; "
                                 f'allowed: {sorted(_LAYER_TYPES)}')
            self.layers[layer_key(spec['name'])] = _LAYER_TYPES[spec['type']](spec)
        self._last_use = self._liveness()

    def _liveness(self) -> Dict[str, int]:
        last = {}
        for i, node in enumerate(self.nodes):
            for name in node['inputs'] + ([node['like']] if node.get('like') else []):
                last[name] = i
        keep = {n for outs in self.output_tensors for n in outs}
        return {k: v for k, v in last.items() if k not in keep}

    def forward(self, x: torch.Tensor, keep: Sequence[str] = (),
                override: Optional[Dict[str, torch.Tensor]] = None) -> Dict[str, List[torch.Tensor]]:
        """Run the graph on the normalized image ``x`` (N, 3, H, W) float.

        Returns ``{output name: [per-level tensor]}`` (int32 accumulators or floats); with ``keep`` (tensor names,
        e.g. probe targets) those intermediate tensors are returned too, under ``'_kept'``, as computed. With
        ``override`` ({tensor name: value}) a computed tensor of that name is replaced by the given value for the
        rest of the graph (teacher forcing: each op then sees the reference model's inputs).
        """
        env = {self.input_name: x}
        keep = set(keep)
        override = override or {}
        kept = {}
        for i, node in enumerate(self.nodes):
            args = [env[n] for n in node['inputs']]
            op = node['op']
            if op == 'layer':
                layer = self.layers[layer_key(node['layer'])]
                if isinstance(layer, (IntConv, FloatConv)):
                    results = layer(args[0], node.get('level', 0))
                else:
                    results = [layer(*args)]
            elif op == 'maxpool':
                results = [_maxpool(args[0], node)]
            elif op == 'upsample':
                results = [_upsample(args[0], env[node['like']] if node.get('like') else None, node)]
            elif op == 'relu':
                results = [args[0].clamp(min=0)]
            else:
                raise ValueError(f'IntegerNetwork: unknown node op {op!r}')
            for name, value in zip(node['outputs'], results):
                env[name] = override.get(name, value)
                if name in keep:
                    kept[name] = value
            for name in node['inputs']:
                if self._last_use.get(name) == i and name not in keep:
                    env.pop(name, None)
        out = {name: [env[t] for t in tensors] for name, tensors in zip(self.output_names, self.output_tensors)}
        if keep:
            out['_kept'] = kept
        return out

    def dequantize(self, outputs: Dict[str, List[torch.Tensor]]) -> Dict[str, List[torch.Tensor]]:
        """Real-valued head outputs: int32 accumulators times their conv's per-channel, per-level scale."""
        real = {}
        for name, sources in zip(self.output_names, self.output_sources):
            real[name] = []
            for t, source in zip(outputs[name], sources):
                if t.is_floating_point():
                    real[name].append(t.float())
                    continue
                layer, j, level = source
                scale = getattr(self.layers[layer_key(layer)], f'scale_{j}')[level]  # (C,)
                real[name].append((t.to(torch.float64) * scale.view(1, -1, 1, 1)).float())
        return real
