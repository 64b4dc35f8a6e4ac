"""ONNX export of a converted detector as QuantizeLinear / DequantizeLinear (QDQ) pairs around float ops, so that
ONNX Runtime's graph optimizer fuses ``DQ -> Conv -> Q`` into ``QLinearConv`` and ``DQ, DQ -> Add -> Q`` into
``QLinearAdd`` and runs them with integer kernels (the QDQ format of the ONNX operators QuantizeLinear,
DequantizeLinear and QLinearConv, opset 21).

Input: the normalized image; outputs: the prediction convs' real outputs per FPN level (``cls_score_0``, ...),
before box decoding and NMS, which stay in mmdet (as mmdeploy does for backends without an NMS plugin). The
graph is written from the :class:`~mmaqd.deploy.converter.Conversion` (its node list and the real-valued form of
each layer), so it has the integer network's structure: every quantized tensor is an 8-bit (or 16-bit) integer
tensor holding the integer value ``v`` of its LIQ grid (AQD, arXiv 2007.06919, section 3.3, eq. 3-5) with scale
``s`` and zero point 0. How LIQ's grids map onto ONNX's affine ``s * (v - zp)``, per kind:

* unsigned activations (``v = c`` in 0..q): ``QuantizeLinear(z, s, 0)`` to uint8, then ``Clip(0, q)`` on the
  integers (QuantizeLinear saturates at 255, not q). Exact.
* zero-level signed activations (``zero_level=True``, ``v = j`` in -m..m): uint8 ``j + 128``,
  ``QuantizeLinear(z, s, 128)``, ``Clip(128 - m, 128 + m)``. Exact.
* LIQ's default signed activations (odd ``v = 2c - q``, no zero level): the code ``c = floor(z / 2s) + (q + 1) / 2``
  is ``QuantizeLinear(z - s, 2s, (q + 1) / 2)`` (the ``- s`` goes into the producing conv's bias, or is an ``Add``
  after a float add), then ``v = 2c - q`` by integer ``Mul`` / ``Sub`` (int32) and a ``Cast`` to int8 (int16 at
  8 bits). Exact up to rounding ties (half to even on another argument), but a producing add cannot fuse into
  ``QLinearAdd`` (a float ``Add`` of ``-s`` sits between).
* weights: the real weight ``s_w (v + mu)`` of LIQ with weight normalization has the real offset ``mu = mean / s_w``
  (:mod:`mmaqd.deploy.grids`). With ``zero_level=True`` there is no offset and the weight is ``s_w j``: int8
  ``r j`` with scale ``s_w / r``, exact. Otherwise it is written as ``round(r (v + mu))`` with scale ``s_w / r``, r
  the largest integer that keeps ``|r (v + mu)| <= 127`` (r = 127 / (q + max|mu|) at 8 bits): exact only where
  ``r mu`` is an integer; the export reports, per layer, the largest weight error in units of the weight step.
* eval BN of level l, ``a_l y + c_l``, is folded into a per-level copy of the conv: scale ``s_w |a_l|`` per output
  channel and the sign of ``a_l`` in the int8 weight; the bias ``a_l b + c_l`` is an int32 tensor in units of
  ``s_x s_w |a_l|`` (its rounding: at most half an accumulator unit). ONNX Runtime then requantizes with a float
  multiplier where the integer network uses a fixed-point one: both round, so codes may differ by one step where
  a value sits within float32 precision of a rounding boundary.
* the prediction convs (int32 accumulators in the integer network) are ``Conv`` on dequantized inputs with float
  outputs (QLinearConv has no int32 output); FCOS's per-level Scale is folded into their weights and bias.
* max-pooling and nearest upsampling (``Resize``, asymmetric, floor) run on the integer tensors; float islands
  (layers trained in full precision) stay float.

Needs ``onnx`` (``pip install -r requirements/deploy.txt``).
"""
import hashlib
import math
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from .converter import Conversion
from .grids import ActGrid, WeightGrid
from .network import layer_key

__all__ = ['export_onnx', 'OnnxExport', 'OPSET', 'onnx_weight']

OPSET = 21
IR_VERSION = 10  # read by ONNX Runtime >= 1.18
_DIMS = [None] * 4  # per output: rank 4, sizes unknown (symbolic names would have to agree across tensors)


def _onnx():
    try:
        import onnx
    except ImportError as e:  # pragma: no cover - exercised only without the optional dependency
        raise ImportError('the ONNX export needs the onnx package: pip install -r requirements/deploy.txt') from e
    return onnx


def _carrier(grid: ActGrid) -> Tuple[np.dtype, int]:
    """(integer type, zero point) holding the grid's values v as ``v + zero point``: uint8 for unsigned and
    zero-level grids (zero point 128: ONNX Runtime fuses uint8 activations into QLinearConv, not int8 ones), int8
    (int16 beyond 127) for LIQ's odd values, which no integer zero point can shift onto a uint8 grid."""
    if not grid.signed:
        return np.dtype(np.uint8), 0
    if grid.zero_level:
        return np.dtype(np.uint8), 128
    return (np.dtype(np.int8) if grid.max_abs <= 127 else np.dtype(np.int16)), 0


def onnx_weight(wg: WeightGrid, int4: bool = False) -> Tuple[np.ndarray, np.ndarray, float]:
    """``(w_int (C_out, K) int8, scale (C_out,) float64, max error)`` with ``scale * w_int`` the int8 form of the
    grid's real weight ``s_w (2c - q + mu)``; the error is in units of the grid step ``2 s_w`` (0: exact).

    The integers are scaled by the largest r that keeps them in int8 (r = 18 for 4-bit zero-level weights): the
    weight stays exact, and the int32 bias of ``QLinearConv``, in units of ``s_x s_w / r``, is rounded r times
    finer. ``int4``: r = 1, the integers j themselves (zero-level weights of at most 4 bits, which fit INT4)."""
    t = (2 * wg.codes - wg.levels).double() + wg.offset.view(-1, 1)  # (C_out, K) v + mu, in units of s_w
    if wg.zero_level:  # v + mu = 2j exactly: integers j in units of 2 s_w
        base, unit, top = t / 2, 2.0, (wg.levels - 1) / 2
    else:
        base, unit, top = t, 1.0, float(wg.levels + wg.offset.abs().max())
    r = 1 if int4 else (math.floor(127 / top) if top <= 127 else 127 / top)
    ints = torch.round(base * r)
    err = float((ints / r - base).abs().max()) * unit / 2
    return ints.to(torch.int8).numpy(), (wg.scale * unit / r).numpy(), err


class OnnxExport:
    """The result of :func:`export_onnx`: the model and what the export could and could not represent exactly."""

    def __init__(self, model, report: List[dict], probes: Dict[str, str], feeds: Dict[str, Tuple[str, np.dtype, int]]):
        self.model = model       # onnx.ModelProto
        self.report = report     # per layer: kind, exact, weight error (steps)
        self.probes = probes     # probe (quantizer#i) -> ONNX output name holding its integer values
        self.feeds = feeds       # probe -> (ONNX input, dtype, zero point) replacing its values downstream (teacher)

    def summary(self) -> dict:
        kinds: Dict[str, List[int]] = {}
        for r in self.report:
            k = kinds.setdefault(r['kind'], [0, 0])
            k[0] += 1
            k[1] += int(r['exact'])
        return {k: dict(layers=n, exact=e) for k, (n, e) in kinds.items()}


class _Builder:

    def __init__(self, conv: Conversion, probes: Optional[str], int4: bool = False):
        if probes not in (None, 'outputs', 'teacher'):
            raise ValueError(f"probes={probes!r} is not supported; allowed: None, 'outputs', 'teacher'")
        self.onnx = _onnx()
        self.conv = conv
        self.spec = conv.spec
        self.net = conv.network
        self.probe_mode = probes
        self.int4 = int4
        self.targets: Dict[str, List[str]] = {}  # tensor -> probes reading it
        for probe, t in (conv.network.probes.items() if probes else ()):
            self.targets.setdefault(t, []).append(probe)
        self.nodes, self.inits, self.outputs, self.inputs = [], [], [], []
        self.feeds: Dict[str, Tuple[str, np.dtype, int]] = {}
        self.init_names: Dict[str, str] = {}
        self.vals: Dict[str, Tuple[str, Optional[ActGrid]]] = {}  # network tensor -> (onnx name, grid or None)
        self.layer_specs = {s['name']: s for s in self.spec['layers']}
        self.report: List[dict] = []
        self.reported = set()
        self.weights: Dict[str, tuple] = {}
        self.probes: Dict[str, str] = {}
        self._n = 0

    # --------------------------------------------------------------------------------------------- graph helpers
    def name(self, hint: str) -> str:
        self._n += 1
        return f'{hint}_{self._n}'

    def const(self, array: np.ndarray, hint: str, int4: bool = False) -> str:
        """An initializer holding ``array`` (identical arrays share one); ``int4``: stored as INT4 (opset 21)."""
        array = np.asarray(array)
        array = np.ascontiguousarray(array) if array.ndim else array  # scalars stay 0-d (per-tensor)
        key = hashlib.sha1(array.tobytes() + str((array.dtype, array.shape, int4)).encode()).hexdigest()
        if key not in self.init_names:
            name = self.name(hint)
            if int4:
                t = self.onnx.helper.make_tensor(name, self.onnx.TensorProto.INT4, array.shape,
                                                 array.reshape(-1).tolist())
            else:
                t = self.onnx.numpy_helper.from_array(array, name)
            self.inits.append(t)
            self.init_names[key] = name
        return self.init_names[key]

    def node(self, op: str, inputs: List[str], hint: str = None, **attrs) -> str:
        out = self.name(hint or op.lower())
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [out], **attrs))
        return out

    def quantize(self, z: str, grid: ActGrid, relu: bool, shifted: bool, hint: str) -> str:
        """Float ``z`` -> the integer values on ``grid`` (module docstring); ``shifted``: ``z`` already holds the
        ``- s`` of an odd grid."""
        dt, zp = _carrier(grid)
        q = grid.levels
        if grid.odd:
            if not shifted:
                z = self.node('Sub', [z, self.const(np.float32(grid.scale), 'half_step')], hint + '_shift')
            c = self.node('QuantizeLinear', [z, self.const(np.float32(2 * grid.scale), 'scale'),
                                             self.const(np.uint8((q + 1) // 2), 'zp')], hint + '_code')
            lo = (q + 1) // 2 if relu else 0
            if lo > 0 or q < 255:
                c = self.node('Clip', [c, self.const(np.uint8(lo), 'lo'), self.const(np.uint8(q), 'hi')],
                              hint + '_clip')
            c = self.node('Cast', [c], hint + '_i32', to=self.onnx.TensorProto.INT32)
            v = self.node('Mul', [c, self.const(np.int32(2), 'two')], hint + '_2c')
            v = self.node('Sub', [v, self.const(np.int32(q), 'q')], hint + '_v')
            return self.node('Cast', [v], hint + '_val', to=self.onnx.helper.np_dtype_to_tensor_dtype(dt))
        v = self.node('QuantizeLinear', [z, self.const(np.float32(grid.scale), 'scale'), self.const(dt.type(zp), 'zp')],
                      hint + '_q')
        lo, hi = zp + (0 if relu or not grid.signed else -grid.max_abs), zp + grid.max_abs
        if (lo, hi) != (np.iinfo(dt).min, np.iinfo(dt).max):
            v = self.node('Clip', [v, self.const(dt.type(lo), 'lo'), self.const(dt.type(hi), 'hi')], hint + '_clip')
        return v

    def dequantize(self, v: str, grid: ActGrid, hint: str) -> str:
        dt, zp = _carrier(grid)
        return self.node('DequantizeLinear', [v, self.const(np.float32(grid.scale), 'scale'),
                                              self.const(dt.type(zp), 'zp')], hint + '_dq')

    def record(self, layer: str, kind: str, exact: bool, **extra) -> None:
        if layer not in self.reported:
            self.reported.add(layer)
            self.report.append(dict(layer=layer, kind=kind, exact=exact, **extra))

    # --------------------------------------------------------------------------------------------- layers
    def int_conv(self, node: dict) -> List[str]:
        name, level = node['layer'], node.get('level', 0)
        spec, real = self.layer_specs[name], self.conv.real[name]
        xg: ActGrid = real['x_grid']
        x_int, _ = self.vals[node['inputs'][0]]
        wg: WeightGrid = real['w_grid']
        int4 = self.int4 and wg.zero_level and wg.bits <= 4
        if name not in self.weights:
            self.weights[name] = onnx_weight(wg, int4)
        w_int, w_scale, w_err = self.weights[name]
        w_shape = spec['w_shape']
        a, c = real['affine'][level] if level in real['affine'] else next(iter(real['affine'].values()))
        a, c = a.numpy(), c.numpy()
        b = real['bias'].numpy()
        mult = float(real['mults'].get(level, 1.0))
        outs, bias_err = [], 0.0
        for j, (kind, grid, relu) in enumerate(real['outputs']):
            hint = f'{name}.{j}@{level}'
            if kind == 'acc':
                gain, bias = np.full_like(a, mult), b * mult
            else:
                gain, bias = a, a * b + c
            if kind == 'int' and grid.odd:
                bias = bias - grid.scale
            sign = np.where(gain < 0, -1, 1).astype(np.int8)
            w = (w_int * sign[:, None]).reshape(w_shape)  # (C_out, C_in/g, kh, kw) int8
            scale = w_scale * np.abs(gain)  # (C_out,)
            x = self.dequantize(x_int, xg, hint + '_x')
            wq = self.node('DequantizeLinear', [self.const(w, 'w', int4),
                                                self.const(scale.astype(np.float32), 'w_scale'),
                                                self.const(np.zeros(len(scale), np.int8), 'w_zp', int4)],
                           hint + '_w', axis=0)
            acc_scale = (xg.scale * scale.astype(np.float32).astype(np.float64)).astype(np.float32)
            b_int = np.round(bias / acc_scale.astype(np.float64))
            if np.abs(b_int).max() >= 2 ** 31:
                raise ValueError(f'{name}: the bias does not fit int32 in units of s_x * s_w')
            if kind == 'int':  # the bias' rounding, at most half an accumulator unit, in output steps
                bias_err = max(bias_err, float(0.5 * acc_scale.max() / grid.scale))
            bq = self.node('DequantizeLinear', [self.const(b_int.astype(np.int32), 'b'),
                                                self.const(acc_scale, 'b_scale'),
                                                self.const(np.zeros(len(scale), np.int32), 'b_zp')], hint + '_b',
                           axis=0)
            z = self.node('Conv', [x, wq, bq], hint + '_conv', strides=spec['stride'], pads=spec['padding'] * 2,
                          dilations=spec['dilation'], group=spec['groups'], kernel_shape=w_shape[2:])
            if kind == 'int':
                outs.append((self.quantize(z, grid, relu, True, hint), grid))
            elif kind == 'acc':
                outs.append((z, None))
            else:
                outs.append((self.node('Relu', [z]) if relu else z, None))
        self.record(name, 'conv', w_err == 0, weight_error_steps=w_err, bias_error_steps=bias_err,
                    weight_bits=real['w_grid'].bits, zero_level=real['w_grid'].zero_level)
        return outs

    def add(self, node: dict) -> List[tuple]:
        name = node['layer']
        real = self.conv.real[name]
        hint = name
        terms = [self.dequantize(self.vals[t][0], g, f'{hint}_{i}') for i, (t, g) in
                 enumerate(zip(node['inputs'], real['grids']))]
        y = terms[0] if len(terms) == 1 else self.node('Add', terms, hint + '_add')
        out = real['out']
        self.record(name, 'add' if len(terms) == 2 else 'rescale', True, fused=not out.odd)
        return [(self.quantize(y, out, real['relu'], False, hint), out)]

    def layer(self, node: dict) -> List[tuple]:
        name = node['layer']
        spec = self.layer_specs[name]
        kind = spec['type']
        if kind == 'conv':
            return self.int_conv(node)
        if kind == 'add':
            return self.add(node)
        if kind == 'quantize':
            real = self.conv.real[name]
            self.record(name, 'quantize', True)
            return [(self.quantize(self.vals[node['inputs'][0]][0], real['grid'], real['relu'], False, name),
                     real['grid'])]
        buf = self.net.layers[layer_key(name)]
        x = self.vals[node['inputs'][0]][0]
        if kind == 'dequant':
            self.record(name, 'dequant (float island)', True)
            y = self.node('Mul', [self.node('Cast', [x], to=self.onnx.TensorProto.FLOAT),
                                  self.const(np.float32(float(buf.scale)), 'scale')], name)
            return [(self.node('Relu', [y]) if spec['relu'] else y, None)]
        if kind == 'float_conv':
            level = node.get('level', 0)
            self.record(name, 'float_conv (float island)', True)
            scale, bias = buf.scale[level].double(), buf.bias[level].double()
            w = (buf.weight.double() * scale.view(-1, 1, 1, 1)).float().numpy()
            b = (buf.conv_bias.double() * scale + bias).float().numpy()
            return [(self.node('Conv', [x, self.const(w, 'fw'), self.const(b, 'fb')], name, strides=spec['stride'],
                               pads=spec['padding'] * 2, dilations=spec['dilation'], group=spec['groups'],
                               kernel_shape=spec['w_shape'][2:]), None)]
        raise ValueError(f'ONNX export: layer {name!r} of type {kind!r} is not supported')

    def upsample(self, node: dict) -> str:
        x = self.vals[node['inputs'][0]][0]
        attrs = dict(mode='nearest', coordinate_transformation_mode='asymmetric', nearest_mode='floor')
        if node.get('scale_factor') is not None:
            sf = float(node['scale_factor'])
            return self.node('Resize', [x, '', self.const(np.array([1, 1, sf, sf], np.float32), 'scales')],
                             'upsample', **attrs)
        like = self.vals[node['like']][0]
        hw = self.node('Shape', [like], 'like_shape', start=2, end=4)
        nc = self.node('Shape', [x], 'x_shape', start=0, end=2)
        sizes = self.node('Concat', [nc, hw], 'sizes', axis=0)
        return self.node('Resize', [x, '', '', sizes], 'upsample', **attrs)

    # --------------------------------------------------------------------------------------------- graph
    def build(self):
        onnx, helper = self.onnx, self.onnx.helper
        self.vals[self.spec['input']] = ('image', None)
        for node in self.spec['nodes']:
            op = node['op']
            if op == 'layer':
                results = self.layer(node)
            elif op == 'maxpool':
                x, g = self.vals[node['inputs'][0]]
                k, s, p = node['kernel'], node['stride'], node['padding']
                results = [(self.node('MaxPool', [x], 'maxpool', kernel_shape=[k, k], strides=[s, s],
                                      pads=[p] * 4), g)]
            elif op == 'upsample':
                results = [(self.upsample(node), self.vals[node['inputs'][0]][1])]
            elif op == 'relu':
                results = [(self.node('Relu', [self.vals[node['inputs'][0]][0]]), None)]
            else:
                raise ValueError(f'ONNX export: node op {op!r} is not supported')
            for t, r in zip(node['outputs'], results):
                self.vals[t] = r
                if t in self.targets:
                    self.probe(t)
        image = helper.make_tensor_value_info('image', onnx.TensorProto.FLOAT, ['batch', 3, 'height', 'width'])
        outputs = []
        for oname, tensors in zip(self.spec['output_names'], self.spec['outputs']):
            for lv, t in enumerate(tensors):
                out = f'{oname}_{lv}'
                self.nodes.append(helper.make_node('Identity', [self.vals[t][0]], [out]))
                outputs.append(helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, _DIMS))
        graph = helper.make_graph(self.nodes, 'mmaqd_integer_detector', [image] + self.inputs, outputs + self.outputs,
                                  self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', OPSET)], producer_name='mmaqd')
        model.ir_version = IR_VERSION
        meta = dict(kind=self.conv.kind, output_names=','.join(self.spec['output_names']),
                    num_levels=str(len(self.spec['outputs'][0])))
        helper.set_model_props(model, meta)
        onnx.checker.check_model(model)
        return OnnxExport(model, self.report, self.probes, self.feeds)

    def probe(self, t: str) -> None:
        """Expose tensor ``t``'s integer values as an int32 output; in teacher mode also read them, downstream,
        from a new graph input (so each op can be fed a reference model's inputs)."""
        onnx, helper = self.onnx, self.onnx.helper
        name, grid = self.vals[t]
        dt, zp = _carrier(grid)
        out = self.node('Cast', [name], 'probe', to=onnx.TensorProto.INT32)
        if zp:
            out = self.node('Sub', [out, self.const(np.int32(zp), 'zp32')], 'probe')
        self.outputs.append(helper.make_tensor_value_info(out, onnx.TensorProto.INT32, _DIMS))
        for p in self.targets[t]:
            self.probes[p] = out
        if self.probe_mode == 'teacher':
            feed = self.name('feed')
            self.inputs.append(helper.make_tensor_value_info(feed, helper.np_dtype_to_tensor_dtype(dt), _DIMS))
            self.vals[t] = (feed, grid)
            for p in self.targets[t]:
                self.feeds[p] = (feed, dt, zp)


def export_onnx(conversion: Conversion, probes: Optional[str] = None, int4_weights: bool = False) -> OnnxExport:
    """The QDQ ONNX model of a converted detector (see the module docstring).

    ``probes`` (verification only): ``'outputs'`` adds one int32 output per tensor that a trained quantizer
    reads (:attr:`IntegerNetwork.probes`) holding its integer values; ``'teacher'`` also replaces each such tensor
    downstream by a new graph input (:attr:`OnnxExport.feeds`), so that every op can be fed a reference model's
    values of its inputs and measured alone.

    ``int4_weights``: zero-level weights of 2-4 bits as INT4 initializers (opset 21; half the bytes). ONNX Runtime
    reads them, but its CPU execution provider then runs those convs in float (measured with onnxruntime 1.32: 2
    of 97 convs of the benchmark FCOS as integer kernels, against 82 with int8 weights), so int8 is the default.
    """
    if not conversion.real:
        raise ValueError('the conversion carries no real-valued layer forms (Conversion.real); convert the trained '
                         'model with mmaqd.deploy.convert_detector in this process')
    return _Builder(conversion, probes, int4_weights).build()
