"""A symbolic trace of a quantized one-stage detector: which layer feeds which quantizer, in forward order.

The converter needs, for every tensor of the fake-quantized model, the quantizers that consume it (a conv's
input quantizer, a QAdd's operand quantizers) and the ops in between (ReLU, max-pool, nearest upsampling), so
that each producer requantizes its accumulator straight onto its consumers' grids (Jacob et al., CVPR 2018,
section 2.4: conv, BN, ReLU and the next quantizer in one output stage). mmdet models have Python control flow
that ``torch.fx`` cannot trace, so this module walks the supported architectures explicitly, following their
``forward`` code: mmaqd's ``AddModuleResNet`` (BasicBlock / Bottleneck with ``Add`` modules), ``AddModuleFPN`` and
the FCOS / RetinaNet heads (``AQDFCOSHead``, ``AQDRetinaHead`` with multi-level BN, and mmdet's own heads with a shared
BN), each conv -> BN -> ReLU. Anything else is refused with an error naming the module.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from mmcv.cnn import ConvModule
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..models.layers import MultiLevelNorm
from ..quantization.layers import Add, QAdd, QConv2d, QConvBN
from .grids import ConversionError

__all__ = ['Val', 'Op', 'Trace', 'trace_detector']


@dataclass(frozen=True)
class Val:
    """A tensor of the traced forward."""
    id: int
    hint: str


@dataclass
class Op:
    """One traced operation.

    kind: ``input`` | ``conv`` | ``add`` | ``relu`` | ``maxpool`` | ``upsample`` | ``output``.
    For ``conv``: ``module`` (QConv2d or nn.Conv2d), ``bn`` (the BN of this call or None), ``relu``, ``level``.
    For ``add``: ``module`` (QAdd). ``output``: ``head_output`` and ``level`` (and ``mult``, FCOS's Scale).
    """
    kind: str
    name: str
    inputs: List[Val]
    out: Optional[Val]
    module: Optional[nn.Module] = None
    bn: Optional[nn.Module] = None
    relu: bool = False
    level: int = 0
    attrs: Dict = field(default_factory=dict)


class Trace:
    """Records :class:`Op` s; ``names`` maps modules to their names in the detector."""

    def __init__(self, model: nn.Module):
        self.ops: List[Op] = []
        self.names = {id(m): n for n, m in model.named_modules()}
        self._n = 0

    def name(self, m: nn.Module) -> str:
        return self.names.get(id(m), type(m).__name__)

    def _val(self, hint: str) -> Val:
        self._n += 1
        return Val(self._n, hint)

    def input(self) -> Val:
        v = self._val('image')
        self.ops.append(Op('input', 'image', [], v))
        return v

    def conv(self, conv: nn.Module, x: Val, bn: Optional[nn.Module] = None, relu: bool = False,
             level: int = 0) -> Val:
        name = self.name(conv)
        if isinstance(conv, QConvBN) or getattr(conv, 'out_quantizer', None) is not None:
            what = 'BN folding' if isinstance(conv, QConvBN) else 'output quantization'
            raise ConversionError(f'{name}: {type(conv).__name__} with FQN-style {what} is not supported by '
                                  'mmaqd.deploy; FQN models are not converted')
        if type(conv) not in (QConv2d, nn.Conv2d):
            raise ConversionError(f'{name}: unsupported layer type {type(conv).__name__}; supported: QConv2d, '
                                  'Conv2d')
        if conv.padding_mode != 'zeros':
            raise ConversionError(f'{name}: padding_mode={conv.padding_mode!r}; only zero padding is supported')
        if bn is not None and (not isinstance(bn, _BatchNorm) or not bn.track_running_stats):
            raise ConversionError(f'{self.name(bn)}: {type(bn).__name__} cannot be folded; supported: BatchNorm '
                                  'with running statistics')
        out = self._val(name)
        self.ops.append(Op('conv', name, [x], out, conv, bn, relu, level))
        return out

    def conv_module(self, cm: nn.Module, x: Val, level: int = 0) -> Val:
        """An mmcv ``ConvModule`` in conv -> norm -> act order with a BN / MultiLevelNorm and a ReLU."""
        name = self.name(cm)
        if not isinstance(cm, ConvModule):
            raise ConversionError(f'{name}: expected an mmcv ConvModule, got {type(cm).__name__}')
        if tuple(cm.order) != ('conv', 'norm', 'act'):
            raise ConversionError(f'{name}: ConvModule order {cm.order} is not supported; use conv -> norm -> act')
        bn = None
        if cm.with_norm:
            bn = cm.norm
            if isinstance(bn, MultiLevelNorm):
                bn = bn.norms[level]
        relu = False
        if cm.with_activation:
            if type(cm.activate) is not nn.ReLU:
                raise ConversionError(f'{name}: activation {type(cm.activate).__name__} is not supported; ReLU only')
            relu = True
        return self.conv(cm.conv, x, bn, relu, level)

    def add(self, add: nn.Module, a: Val, b: Val) -> Val:
        name = self.name(add)
        if type(add) is Add:
            raise ConversionError(f'{name}: the add is not quantized; integer models need quantized adds '
                                  '(QuantConfig.quantize_adds=True)')
        if not isinstance(add, QAdd):
            raise ConversionError(f'{name}: unsupported add module {type(add).__name__}')
        out = self._val(name)
        self.ops.append(Op('add', name, [a, b], out, add))
        return out

    def relu(self, x: Val) -> Val:
        out = self._val('relu')
        self.ops.append(Op('relu', 'relu', [x], out))
        return out

    def maxpool(self, x: Val, kernel: int, stride: int, padding: int, name: str = 'maxpool') -> Val:
        out = self._val(name)
        self.ops.append(Op('maxpool', name, [x], out, attrs=dict(kernel=kernel, stride=stride, padding=padding)))
        return out

    def upsample(self, x: Val, like: Optional[Val], scale_factor=None) -> Val:
        out = self._val('upsample')
        inputs = [x] + ([like] if like is not None else [])
        self.ops.append(Op('upsample', 'upsample', inputs, out, attrs=dict(scale_factor=scale_factor)))
        return out

    def output(self, head_output: str, level: int, x: Val, mult: float = 1.0) -> None:
        self.ops.append(Op('output', head_output, [x], None, level=level, attrs=dict(mult=mult)))


def _single(value, what: str, name: str) -> int:
    value = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if value[0] != value[1]:
        raise ConversionError(f'{name}: non-square {what} {value} is not supported')
    return int(value[0])


# ------------------------------------------------------------------------------------------------ backbone
def _trace_block(t: Trace, blk: nn.Module, x: Val) -> Val:
    name = t.name(blk)
    if not hasattr(blk, 'add'):
        raise ConversionError(f'{name}: {type(blk).__name__} has no Add module; build the backbone as AddModuleResNet')
    if getattr(blk, 'with_plugins', False) or getattr(blk, 'with_dcn', False):
        raise ConversionError(f'{name}: plugins / DCN in a residual block are not supported')
    if hasattr(blk, 'conv3'):  # Bottleneck
        out = t.conv(blk.conv1, x, blk.norm1, relu=True)
        out = t.conv(blk.conv2, out, blk.norm2, relu=True)
        out = t.conv(blk.conv3, out, blk.norm3)
    else:  # BasicBlock
        out = t.conv(blk.conv1, x, blk.norm1, relu=True)
        out = t.conv(blk.conv2, out, blk.norm2)
    identity = x
    if blk.downsample is not None:
        ds = list(blk.downsample)
        if len(ds) != 2 or not isinstance(ds[0], nn.Conv2d) or not isinstance(ds[1], _BatchNorm):
            raise ConversionError(f'{name}.downsample: only conv -> BN shortcuts are supported (no avg_down), '
                                  f'got {[type(m).__name__ for m in ds]}')
        identity = t.conv(ds[0], x, ds[1])
    return t.relu(t.add(blk.add, out, identity))


def trace_resnet(t: Trace, bb: nn.Module, x: Val) -> List[Val]:
    """mmdet's ResNet forward (stem conv1 -> bn1 -> relu -> maxpool, residual layers, out_indices)."""
    name = t.name(bb)
    if getattr(bb, 'deep_stem', False):
        raise ConversionError(f'{name}: deep_stem is not supported')
    x = t.conv(bb.conv1, x, bb.norm1, relu=True)
    mp = bb.maxpool
    if not isinstance(mp, nn.MaxPool2d) or mp.ceil_mode or _single(mp.dilation, 'dilation', name) != 1:
        raise ConversionError(f'{name}.maxpool: only MaxPool2d without ceil_mode / dilation is supported')
    x = t.maxpool(x, _single(mp.kernel_size, 'kernel', name), _single(mp.stride, 'stride', name),
                  _single(mp.padding, 'padding', name), name + '.maxpool')
    outs = []
    for i, layer_name in enumerate(bb.res_layers):
        for blk in getattr(bb, layer_name):
            x = _trace_block(t, blk, x)
        if i in bb.out_indices:
            outs.append(x)
    return outs


# ------------------------------------------------------------------------------------------------ neck
def trace_fpn(t: Trace, neck: nn.Module, inputs: List[Val]) -> List[Val]:
    """mmaqd's AddModuleFPN forward (mmdet's FPN with Add modules)."""
    name = t.name(neck)
    if not hasattr(neck, 'top_down_adds'):
        raise ConversionError(f'{name}: {type(neck).__name__} has no Add modules; build the neck as AddModuleFPN')
    laterals = [t.conv_module(lc, inputs[i + neck.start_level]) for i, lc in enumerate(neck.lateral_convs)]
    scale_factor = neck.upsample_cfg.get('scale_factor')
    if neck.upsample_cfg.get('mode', 'nearest') != 'nearest':
        raise ConversionError(f'{name}: upsample mode {neck.upsample_cfg["mode"]!r}; only nearest is supported')
    for i in range(len(laterals) - 1, 0, -1):
        up = t.upsample(laterals[i], None if scale_factor else laterals[i - 1], scale_factor)
        laterals[i - 1] = t.add(neck.top_down_adds[i - 1], laterals[i - 1], up)
    used = len(laterals)
    outs = [t.conv_module(neck.fpn_convs[i], laterals[i]) for i in range(used)]
    if neck.num_outs > used:
        if not neck.add_extra_convs:
            for _ in range(neck.num_outs - used):
                outs.append(t.maxpool(outs[-1], 1, 2, 0, name + '.extra_maxpool'))
            return outs
        source = {'on_input': lambda: inputs[neck.backbone_end_level - 1], 'on_lateral': lambda: laterals[-1],
                  'on_output': lambda: outs[-1]}[neck.add_extra_convs]()
        outs.append(t.conv_module(neck.fpn_convs[used], source))
        for i in range(used + 1, neck.num_outs):
            src = t.relu(outs[-1]) if neck.relu_before_extra_convs else outs[-1]
            outs.append(t.conv_module(neck.fpn_convs[i], src))
    return outs


# ------------------------------------------------------------------------------------------------ heads
def _tower(t: Trace, convs, x: Val, level: int) -> Val:
    for cm in convs:
        x = t.conv_module(cm, x, level)
    return x


def trace_fcos_head(t: Trace, head: nn.Module, feats: List[Val]) -> Tuple[str, ...]:
    """mmdet's FCOSHead.forward_single per level; FCOS's per-level Scale multiplies bbox_pred (folded)."""
    for level, x in enumerate(feats):
        cls = _tower(t, head.cls_convs, x, level)
        t.output('cls_score', level, t.conv(head.conv_cls, cls, level=level))
        reg = _tower(t, head.reg_convs, x, level)
        t.output('bbox_pred', level, t.conv(head.conv_reg, reg, level=level),
                 mult=float(head.scales[level].scale.detach()))
        ctr_in = reg if head.centerness_on_reg else cls
        t.output('centerness', level, t.conv(head.conv_centerness, ctr_in, level=level))
    return ('cls_score', 'bbox_pred', 'centerness')


def trace_retina_head(t: Trace, head: nn.Module, feats: List[Val]) -> Tuple[str, ...]:
    """mmdet's RetinaHead.forward_single per level."""
    for level, x in enumerate(feats):
        cls = _tower(t, head.cls_convs, x, level)
        t.output('cls_score', level, t.conv(head.retina_cls, cls, level=level))
        reg = _tower(t, head.reg_convs, x, level)
        t.output('bbox_pred', level, t.conv(head.retina_reg, reg, level=level))
    return ('cls_score', 'bbox_pred')


def trace_detector(model: nn.Module) -> Tuple[Trace, Tuple[str, ...], str]:
    """Trace a QFCOS / QRetinaNet (or an FCOS / RetinaNet built from mmaqd's modules).

    Returns the trace, the head's output names and the kind (``'fcos'`` or ``'retinanet'``).
    """
    from mmdet.models.backbones import ResNet
    from mmdet.models.dense_heads import FCOSHead, RetinaHead
    head = getattr(model, 'bbox_head', None)
    if isinstance(head, FCOSHead):
        kind, head_fn = 'fcos', trace_fcos_head
    elif isinstance(head, RetinaHead):
        kind, head_fn = 'retinanet', trace_retina_head
    else:
        raise ConversionError(f'{type(model).__name__}: unsupported detector head {type(head).__name__}; '
                              'supported: FCOSHead, RetinaHead and their AQD variants')
    if not isinstance(model.backbone, ResNet):
        raise ConversionError(f'backbone: unsupported type {type(model.backbone).__name__}; supported: AddModuleResNet')
    t = Trace(model)
    feats = trace_resnet(t, model.backbone, t.input())
    if getattr(model, 'neck', None) is not None:
        feats = trace_fpn(t, model.neck, feats)
    if len(feats) > head.prior_generator.num_levels:
        raise ConversionError(f'the neck gives {len(feats)} levels, the head has {head.prior_generator.num_levels}')
    names = head_fn(t, head, feats)
    return t, names, kind
