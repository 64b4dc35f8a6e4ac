"""Converting a trained fake-quantized detector into an :class:`~mmaqd.deploy.network.IntegerNetwork`.

The arithmetic (AQD, arXiv 2007.06919, section 3.3 for LIQ's grids and 3.2 for multi-level BN; Jacob et al.,
"Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference", CVPR 2018,
section 2.2-2.4 for the fixed-point output stage):

* a conv with input grid ``s_x * v_x`` and LIQ weight ``s_w[o] * (v_w + mu[o])`` accumulates
  ``acc = A * 2^F + round(round(mu * 2^G) * S / 2^(G - F))`` (A = conv(v_x, v_w), S = conv(v_x, ones)) in units of
  ``s_w s_x / 2^F``; F is the largest number of fractional bits (<= 24) for which no accumulator can leave int32,
  G (<= 30) the most that keep ``round(mu * 2^G)`` in int32 (:func:`mmaqd.ops.quant_conv2d`);
* eval BN of FPN level l, ``z = a_l * y + c_l``, the ReLU and the consumer's LIQ quantizer become one output
  stage per (consumer, level): ``M_l = a_l s_w s_x / (2^F s')``, ``B_l = round((b + c_l / a_l) 2^F / (s_w s_x))``,
  code ``clamp(round(M_l (acc + B_l)) + zp, qmin, q)``. On an unsigned grid s' = s and zp = 0; on a signed one
  (code ``round(z / (2s) + q / 2)``) s' = 2s, zp = (q - 1) / 2 and half a step goes into B_l; on a zero-level
  signed grid s' = s, zp = 0 and the clamp is -m..m;
* a QAdd rescales both operands onto a common grid (TFLite's add: ``<< 20``, then ``s_i / (2 max s)``), adds, and
  requantizes onto its output quantizer; a value that an integer op produced and another quantizer consumes is
  rescaled the same way; max-pooling and nearest upsampling run on integers;
* layers trained in full precision (no quantizers) stay float: float islands, listed by name.
"""
import math
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from ..ops import pack_codes, quantize_multiplier
from ..quantization.layers import QConv2d
from .grids import ActGrid, ConversionError, act_grid, weight_grid
from .network import IntegerNetwork, layer_key
from .trace import Op, Val, trace_detector

__all__ = ['convert_detector', 'Conversion', 'ADD_LEFT_SHIFT']

ADD_LEFT_SHIFT = 20  # TFLite's left shift of the operands of a quantized add
_MAX_FRAC_BITS = 24
_MAX_OFFSET_FRAC_BITS = 30
_I32_MAX = (1 << 31) - 1


@dataclass(frozen=True)
class _Req:
    """What a consumer needs from a producer: integer values on ``grid``, a float, or a raw accumulator."""
    kind: str  # 'int' | 'float' | 'acc'
    grid: Optional[ActGrid] = None
    relu: bool = False


@dataclass
class Conversion:
    """The result of :func:`convert_detector`."""
    network: IntegerNetwork
    spec: dict                 # IntegerNetwork(**spec) rebuilds the network (JSON-able)
    report: List[dict]         # one readable entry per layer (scales, F, grids)
    float_islands: List[str]   # layers left in floating point
    kind: str                  # 'fcos' | 'retinanet'
    real: Dict[str, dict]      # layer name -> its real-valued form (grids, BN, biases) for exporters (onnx_export)


def _bn_affine(bn: Optional[nn.Module], c: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(a, c) of eval BN ``z = a * y + c`` in float64 (identity without a BN)."""
    if bn is None:
        return torch.ones(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64)
    var, mean = bn.running_var.double(), bn.running_mean.double()
    gamma = bn.weight.detach().double() if bn.affine else torch.ones_like(var)
    beta = bn.bias.detach().double() if bn.affine else torch.zeros_like(var)
    a = gamma / torch.sqrt(var + bn.eps)
    return a, beta - a * mean


def _out_stage(grid: ActGrid, relu: bool) -> Tuple[float, int, int, int]:
    """(s', zero point, qmin, qmax) of the output stage onto ``grid`` (see the module docstring)."""
    q = grid.levels
    if grid.odd:
        return 2 * grid.scale, (q - 1) // 2, (q + 1) // 2 if relu else 0, q
    if grid.signed:  # zero level: v = c in -m..m
        return grid.scale, 0, 0 if relu else -grid.max_abs, grid.max_abs
    return grid.scale, 0, 0, q


class _Converter:

    def __init__(self, model: nn.Module):
        self.trace, self.output_names, self.kind = trace_detector(model)
        self.ops = self.trace.ops
        self.producer = {op.out.id: i for i, op in enumerate(self.ops) if op.out is not None}
        self.layers: 'OrderedDict[str, dict]' = OrderedDict()   # name -> spec
        self.tensors: Dict[str, Dict[str, torch.Tensor]] = {}    # name -> buffers
        self.report: List[dict] = []
        self.nodes: List[dict] = []
        self.src_tensors: Dict[Tuple[int, _Req], str] = {}
        self.path_cache: Dict[Tuple[int, _Req], str] = {}
        self.probes: Dict[str, str] = {}
        self.probe_count = defaultdict(int)
        self.outputs = {n: {} for n in self.output_names}
        self.sources = {n: {} for n in self.output_names}
        self.float_islands: List[str] = []
        self.real: Dict[str, dict] = {}
        self._n = 0

    # ----------------------------------------------------------------------------------------- helpers
    def tensor(self, hint: str) -> str:
        self._n += 1
        return f't{self._n}:{hint}'

    def resolve(self, val: Val) -> Tuple[int, List[Op], bool]:
        """The producing op (index) of ``val`` behind relu / maxpool / upsample ops, those ops, any relu."""
        path, relu = [], False
        i = self.producer[val.id]
        while self.ops[i].kind in ('relu', 'maxpool', 'upsample'):
            op = self.ops[i]
            if op.kind == 'relu':
                relu = True
            else:
                path.append(op)
            i = self.producer[op.inputs[0].id]
        return i, path[::-1], relu

    @staticmethod
    def is_int_conv(conv: nn.Module) -> bool:
        return isinstance(conv, QConv2d) and conv.act_quantizer is not None and conv.weight_quantizer is not None

    def conv_need(self, op: Op) -> _Req:
        conv = op.module
        if isinstance(conv, QConv2d) and (conv.act_quantizer is None) != (conv.weight_quantizer is None):
            raise ConversionError(f'{op.name}: weight and input must both be quantized or both full precision; '
                                  f'got weight={type(conv.weight_quantizer).__name__}, '
                                  f'input={type(conv.act_quantizer).__name__}')
        if self.is_int_conv(conv):
            return _Req('int', act_grid(op.name + '.act_quantizer', conv.act_quantizer))
        return _Req('float')

    def needs(self, op: Op) -> List[Tuple[Val, _Req]]:
        if op.kind == 'conv':
            return [(op.inputs[0], self.conv_need(op))]
        if op.kind == 'add':
            m = op.module
            for side in ('a_quantizer', 'b_quantizer', 'out_quantizer'):
                if getattr(m, side) is None:
                    raise ConversionError(f'{op.name}: {side} is None; integer adds need all three quantizers')
            return [(op.inputs[0], _Req('int', act_grid(op.name + '.a_quantizer', m.a_quantizer))),
                    (op.inputs[1], _Req('int', act_grid(op.name + '.b_quantizer', m.b_quantizer)))]
        if op.kind == 'output':
            src = self.ops[self.producer[op.inputs[0].id]]
            return [(op.inputs[0], _Req('acc' if self.is_int_conv(src.module) else 'float'))]
        return []

    # ----------------------------------------------------------------------------------------- run
    def run(self) -> Conversion:
        requests = defaultdict(list)  # producer op index -> [_Req]
        by_module = defaultdict(list)  # id(conv module) -> [_Req], the union over its calls (levels)
        for op in self.ops:
            for val, need in self.needs(op):
                src, _, relu = self.resolve(val)
                req = _Req(need.kind, need.grid, relu)
                if req not in requests[src]:
                    requests[src].append(req)
                if self.ops[src].kind == 'conv' and req not in by_module[id(self.ops[src].module)]:
                    by_module[id(self.ops[src].module)].append(req)
        self.by_module = by_module
        self.mults = defaultdict(dict)  # id(conv) -> {level: Scale}
        for op in self.ops:
            if op.kind == 'output':
                src = self.ops[self.producer[op.inputs[0].id]]
                self.mults[id(src.module)][op.level] = op.attrs['mult']
        for i, op in enumerate(self.ops):
            getattr(self, f'_emit_{op.kind}', lambda *a: None)(i, op, requests[i])
        return self.finish()

    def get_input(self, val: Val, need: _Req) -> str:
        src, path, relu = self.resolve(val)
        req = _Req(need.kind, need.grid, relu)
        name = self.src_tensors[(src, req)]
        for p in path:
            key = (id(p), req)
            if key not in self.path_cache:
                out = self.tensor(p.kind)
                node = dict(op=p.kind, inputs=[name], outputs=[out])
                if p.kind == 'maxpool':
                    node.update(p.attrs)
                else:
                    node['scale_factor'] = p.attrs['scale_factor']
                    if len(p.inputs) > 1:
                        node['like'] = self.like_tensor(p.inputs[1])
                self.nodes.append(node)
                self.path_cache[key] = out
            name = self.path_cache[key]
        if need.kind == 'int':
            g = need.grid.name
            self.probes[f'{g}#{self.probe_count[g]}'] = name
            self.probe_count[g] += 1
        return name

    def like_tensor(self, val: Val) -> str:
        src, path, _ = self.resolve(val)
        if path:
            raise ConversionError('upsampling to the size of a pooled / upsampled tensor is not supported')
        for (i, _), name in self.src_tensors.items():
            if i == src:
                return name
        raise ConversionError(f'no tensor of {val.hint} exists before it is needed as an upsampling size')

    def add_layer(self, spec: dict, tensors: Dict[str, torch.Tensor], report: Optional[dict] = None) -> None:
        self.layers[spec['name']] = spec
        self.tensors[spec['name']] = tensors
        if report is not None:
            self.report.append(report)

    def emit_layer(self, layer: str, inputs: List[str], outputs: List[str], level: int = 0) -> None:
        self.nodes.append(dict(op='layer', layer=layer, level=level, inputs=inputs, outputs=outputs))

    # ----------------------------------------------------------------------------------------- float -> int
    def quantize_node(self, src: str, grid: ActGrid, relu: bool, hint: str) -> str:
        name = f'{hint}->{grid.name}' + ('+relu' if relu else '')
        if name not in self.layers:
            self.add_layer(dict(name=name, type='quantize', bits=grid.bits, signed=grid.signed, relu=relu,
                                zero_level=grid.zero_level),
                           dict(alpha=torch.tensor(grid.alpha, dtype=torch.float32)),
                           dict(layer=name, type='quantize', grid=grid.describe(), relu=relu))
            self.real[name] = dict(grid=grid, relu=relu)
        out = self.tensor('q')
        self.emit_layer(name, [src], [out])
        return out

    def _emit_input(self, i: int, op: Op, reqs: List[_Req]) -> None:
        self.input_name = 'image'
        for req in reqs:
            if req.kind == 'int':
                self.src_tensors[(i, req)] = self.quantize_node('image', req.grid, req.relu, 'image')
            else:
                self.src_tensors[(i, req)] = self.relu_node('image') if req.relu else 'image'

    def relu_node(self, src: str) -> str:
        out = self.tensor('relu')
        self.nodes.append(dict(op='relu', inputs=[src], outputs=[out]))
        return out

    # ----------------------------------------------------------------------------------------- convs
    def _emit_conv(self, i: int, op: Op, reqs: List[_Req]) -> None:
        x = self.get_input(op.inputs[0], self.conv_need(op))
        if not self.is_int_conv(op.module):
            return self._emit_float_conv(i, op, reqs, x)
        reqs_all = self.by_module[id(op.module)]
        if op.name not in self.layers:
            self.int_conv_layer(op, reqs_all)
        outs = [self.tensor('conv') for _ in reqs_all]
        self.emit_layer(op.name, [x], outs, op.level)
        for req, out in zip(reqs_all, outs):
            self.src_tensors[(i, req)] = out

    def _calls(self, module: nn.Module) -> Dict[int, Op]:
        calls = {}
        for op in self.ops:
            if op.kind == 'conv' and op.module is module:
                if op.level in calls and calls[op.level].bn is not op.bn:
                    raise ConversionError(f'{op.name}: two calls at level {op.level} with different BNs')
                calls[op.level] = op
        if len({op.relu for op in calls.values()}) > 1:
            raise ConversionError(f'{next(iter(calls.values())).name}: ReLU differs between levels')
        return calls

    def int_conv_layer(self, op: Op, reqs: List[_Req]) -> None:
        conv = op.module
        calls = self._calls(conv)
        levels = max(calls) + 1
        xg = act_grid(op.name + '.act_quantizer', conv.act_quantizer)
        wg = weight_grid(op.name, conv)
        c_out = conv.out_channels
        k = wg.codes.shape[1]
        s_x = xg.scale
        s_ws = wg.scale * s_x  # (C,) float64: s_w * s_x
        b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(c_out, dtype=torch.float64)
        affine = {lv: _bn_affine(c.bn, c_out) for lv, c in calls.items()}
        for lv, (a, _) in affine.items():
            if (a == 0).any():
                bad = int((a == 0).nonzero()[0])
                raise ConversionError(f'{op.name}: the BN of level {lv} has gamma = 0 in channel {bad}; the '
                                      'channel is constant and cannot be requantized through it')
        mults = self.mults.get(id(conv), {})
        for req in reqs:
            if req.kind == 'acc' and any(c.bn is not None for c in calls.values()):
                raise ConversionError(f'{op.name}: a prediction conv with a BN after it is not supported')

        mu_max = float(wg.offset.abs().max())
        offset_frac = min(_MAX_OFFSET_FRAC_BITS, 30 - max(0, math.ceil(math.log2(mu_max + 1e-30))))
        mu_t = torch.round(wg.offset * 2 ** offset_frac)  # (C,) float64 integers, |.| < 2^31
        for frac in range(min(_MAX_FRAC_BITS, offset_frac), -1, -1):
            tables, bmax, left = [], 0.0, 0
            for req in reqs:
                t = self._stage_tables(req, op, calls, affine, levels, s_ws, b, frac, mults)
                tables.append(t)
                if 'bias' in t and req.kind != 'float':
                    bmax = max(bmax, float(t['bias'].abs().max()))
                if 'shift' in t:
                    left = max(left, int(t['shift'].max()))
            bound = k * xg.max_abs * (wg.levels + mu_max) * 2 ** frac + 1 + bmax
            if bound * 2 ** max(left, 0) <= _I32_MAX:
                break
        else:
            raise ConversionError(f'{op.name}: no number of fractional bits keeps the int32 accumulator from '
                                  f'overflowing (K={k}, {xg.bits}-bit input, {wg.bits}-bit weight)')
        has_offset = bool((mu_t != 0).any())
        packed = pack_codes(wg.codes, wg.bits)
        outputs, buffers = [], dict(weight=packed, w_offset=mu_t.to(torch.int32))
        for j, (req, t) in enumerate(zip(reqs, tables)):
            out = dict(kind=req.kind if req.kind != 'int' else 'requant', relu=req.relu or op.relu)
            if req.kind == 'int':
                out.update(grid=req.grid.name, zero_point=t['zp'], qmin=t['qmin'], qmax=t['qmax'],
                           levels=req.grid.levels, signed=req.grid.odd)
                buffers[f'm0_{j}'], buffers[f'shift_{j}'] = t['m0'], t['shift']
            else:
                buffers[f'scale_{j}'] = t['scale']
            buffers[f'bias_{j}'] = t['bias'] if req.kind == 'float' else t['bias'].to(torch.int32)
            outputs.append(out)
        spec = dict(name=op.name, type='conv', w_shape=list(conv.weight.shape), w_bits=wg.bits,
                    w_bytes=packed.shape[1], has_offset=has_offset, frac_bits=frac, offset_frac_bits=offset_frac,
                    stride=list(conv.stride),
                    padding=list(conv.padding), dilation=list(conv.dilation), groups=conv.groups, num_levels=levels,
                    outputs=outputs)
        report = dict(layer=op.name, type='conv', input=xg.describe(), weight_bits=wg.bits,
                      weight_scale=[float(wg.scale.min()), float(wg.scale.max())],
                      weight_offset=[float(wg.offset.min()), float(wg.offset.max())], frac_bits=frac,
                      offset_frac_bits=offset_frac,
                      acc_bound=bound, levels=levels, outputs=[
                          dict(o, **({'grid': req.grid.describe()} if req.grid else {})) for o, req in
                          zip(outputs, reqs)])
        self.add_layer(spec, buffers, report)
        self.real[op.name] = dict(x_grid=xg, w_grid=wg, bias=b, affine=affine, mults=mults,
                                  outputs=[(req.kind, req.grid, out['relu']) for req, out in zip(reqs, outputs)])

    @staticmethod
    def _stage_tables(req: _Req, op: Op, calls, affine, levels: int, s_ws: torch.Tensor, b: torch.Tensor,
                      frac: int, mults: Dict[int, float]) -> dict:
        """Per-level output-stage tables (L, C) of one consumer ``req`` at ``frac`` fractional bits."""
        c = s_ws.shape[0]
        unit = s_ws / 2 ** frac  # (C,) real value of one accumulator unit
        relu = req.relu or op.relu
        if req.kind == 'acc':
            bias = torch.round(b / unit).expand(levels, c).clone()  # float64 integers, int32 after the check
            scale = torch.stack([unit * mults.get(lv, 1.0) for lv in range(levels)])
            return dict(bias=bias, scale=scale)
        if req.kind == 'float':
            scale = torch.zeros(levels, c, dtype=torch.float64)
            bias = torch.zeros(levels, c, dtype=torch.float64)
            for lv, (a, cc) in affine.items():
                scale[lv], bias[lv] = a * unit, a * b + cc
            return dict(scale=scale, bias=bias)
        s_out, zp, qmin, qmax = _out_stage(req.grid, relu)
        m = torch.ones(levels, c, dtype=torch.float64)
        bias = torch.zeros(levels, c, dtype=torch.float64)
        for lv, (a, cc) in affine.items():
            m[lv] = a * unit / s_out
            bias[lv] = (b + cc / a) / unit + (0.5 / m[lv] if req.grid.odd else 0.0)
        m0, shift = quantize_multiplier(m)
        return dict(m0=m0, shift=shift, bias=torch.round(bias), zp=zp, qmin=qmin, qmax=qmax)

    def _emit_float_conv(self, i: int, op: Op, reqs: List[_Req], x: str) -> None:
        conv = op.module
        if op.name not in self.layers:
            calls = self._calls(conv)
            levels = max(calls) + 1
            c_out = conv.out_channels
            with torch.no_grad():
                w = conv.weight_quantizer(conv.weight) if getattr(conv, 'weight_quantizer', None) else conv.weight
            scale = torch.ones(levels, c_out)
            bias = torch.zeros(levels, c_out)
            mults = self.mults.get(id(conv), {})
            for lv, c in calls.items():
                a, cc = _bn_affine(c.bn, c_out)
                scale[lv], bias[lv] = (a * mults.get(lv, 1.0)).float(), (cc * mults.get(lv, 1.0)).float()
            cb = conv.bias.detach() if conv.bias is not None else torch.zeros(c_out)
            spec = dict(name=op.name, type='float_conv', w_shape=list(w.shape), stride=list(conv.stride),
                        padding=list(conv.padding), dilation=list(conv.dilation), groups=conv.groups,
                        num_levels=levels)
            self.add_layer(spec, dict(weight=w.detach().float(), conv_bias=cb.float(), scale=scale, bias=bias),
                           dict(layer=op.name, type='float_conv (float island)', levels=levels))
            self.float_islands.append(op.name)
        z = self.tensor('fconv')
        self.emit_layer(op.name, [x], [z], op.level)
        for req in reqs:
            relu = req.relu or op.relu
            if req.kind == 'int':
                self.src_tensors[(i, req)] = self.quantize_node(z, req.grid, relu, op.name)
            else:
                self.src_tensors[(i, req)] = self.relu_node(z) if relu else z

    # ----------------------------------------------------------------------------------------- adds
    def add_layer_tables(self, name: str, grids: List[ActGrid], out: ActGrid, relu: bool, kind: str) -> None:
        """An IntAdd layer: operands on ``grids`` (one: a rescale), output on ``out``."""
        if name in self.layers:
            return
        smax = max(g.scale for g in grids)
        s_out, zp, qmin, qmax = _out_stage(out, relu)
        shift_l = ADD_LEFT_SHIFT
        m_out = 2 * smax / (2 ** shift_l * s_out)
        bias = round(0.5 / m_out) if out.odd else 0
        if abs(bias) + 2 * max(g.max_abs for g in grids) * 2 ** (shift_l - 1) > _I32_MAX:
            raise ConversionError(f'{name}: the rescaled operands would overflow int32 (output scale {s_out:.3g} '
                                  f'vs operand scale {smax:.3g})')
        tensors = {}
        for side, g in zip(('a', 'b'), grids):
            m0, sh = quantize_multiplier(torch.tensor(g.scale / (2 * smax)))
            tensors[f'{side}_m0'], tensors[f'{side}_shift'] = m0, sh
        if len(grids) == 1:
            tensors['b_m0'], tensors['b_shift'] = torch.tensor(0, dtype=torch.int32), torch.tensor(0, dtype=torch.int32)
        m0, sh = quantize_multiplier(torch.tensor(m_out))
        tensors.update(m0=m0, shift=sh, bias=torch.tensor(bias, dtype=torch.int32))
        spec = dict(name=name, type='add', left_shift=shift_l, zero_point=zp, qmin=qmin, qmax=qmax,
                    levels=out.levels, signed=out.odd)
        self.add_layer(spec, tensors, dict(layer=name, type=kind, inputs=[g.describe() for g in grids],
                                           output=out.describe(), relu=relu))
        self.real[name] = dict(grids=list(grids), out=out, relu=relu)

    def _emit_add(self, i: int, op: Op, reqs: List[_Req]) -> None:
        (va, na), (vb, nb) = self.needs(op)
        a, b = self.get_input(va, na), self.get_input(vb, nb)
        out_grid = act_grid(op.name + '.out_quantizer', op.module.out_quantizer)
        self.add_layer_tables(op.name, [na.grid, nb.grid], out_grid, False, 'add')
        out = self.tensor('add')
        self.emit_layer(op.name, [a, b], [out])
        self.probes[f'{out_grid.name}#{self.probe_count[out_grid.name]}'] = out
        self.probe_count[out_grid.name] += 1
        for req in reqs:
            if req.kind == 'int':
                name = f'{op.name}->{req.grid.name}' + ('+relu' if req.relu else '')
                self.add_layer_tables(name, [out_grid], req.grid, req.relu, 'rescale')
                t = self.tensor('rescale')
                self.emit_layer(name, [out], [t])
            elif req.kind == 'float':
                name = f'{op.name}.dequant' + ('+relu' if req.relu else '')
                if name not in self.layers:
                    self.add_layer(dict(name=name, type='dequant', relu=req.relu),
                                   dict(scale=torch.tensor(out_grid.scale, dtype=torch.float64)))
                t = self.tensor('dequant')
                self.emit_layer(name, [out], [t])
            else:
                raise ConversionError(f'{op.name}: an add cannot feed a prediction output directly')
            self.src_tensors[(i, req)] = t

    # ----------------------------------------------------------------------------------------- outputs
    def _emit_output(self, i: int, op: Op, reqs: List[_Req]) -> None:
        (val, need), = self.needs(op)
        name = self.get_input(val, need)
        self.outputs[op.name][op.level] = name
        src = self.ops[self.producer[val.id]]
        if need.kind == 'acc':
            j = self.by_module[id(src.module)].index(_Req('acc'))
            self.sources[op.name][op.level] = [src.name, j, src.level]
        else:
            self.sources[op.name][op.level] = None

    def finish(self) -> Conversion:
        n_levels = {len(v) for v in self.outputs.values()}
        outputs = [[self.outputs[n][lv] for lv in sorted(self.outputs[n])] for n in self.output_names]
        sources = [[self.sources[n][lv] for lv in sorted(self.sources[n])] for n in self.output_names]
        spec = dict(layers=list(self.layers.values()), nodes=self.nodes, input=self.input_name, outputs=outputs,
                    output_names=list(self.output_names), output_sources=sources, probes=self.probes)
        net = IntegerNetwork(**spec)
        state = {}
        for name, buffers in self.tensors.items():
            for key, value in buffers.items():
                state[f'layers.{layer_key(name)}.{key}'] = value
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise RuntimeError(f'internal error: network buffers mismatch: missing {missing}, unexpected {unexpected}')
        assert len(n_levels) == 1
        return Conversion(net, spec, self.report, self.float_islands, self.kind, self.real)


@torch.no_grad()
def convert_detector(model: nn.Module) -> Conversion:
    """Convert a trained QFCOS / QRetinaNet (eval mode is set) into an integer network.

    Raises:
        ConversionError: a layer, quantizer or structure without an exact integer form, named in the message.
    """
    model.eval()
    from ..quantization import quantizers
    if not any(True for _ in quantizers(model)):
        raise ConversionError(f'{type(model).__name__} has no quantizers: a full-precision model has no integer '
                              'form; convert a quantized config (model.type QFCOS / QRetinaNet with a quant_cfg)')
    return _Converter(model).run()
