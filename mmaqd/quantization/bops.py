"""Bit-operations (BOPs): the compute cost of a quantized network as quantization papers report it.

A conv or linear layer that multiplies ``b_a``-bit activations with ``b_w``-bit weights costs

    BOPs = MACs x b_w x b_a

where MACs are its multiply-accumulates on the given input (one per weight per output position, batch included).
A full-precision side counts 32 bits, so a full-precision layer costs MACs x 32 x 32 and a model's BOPs fall by
``(32 x 32) / (b_w x b_a)`` where it is quantized (e.g. 64x at 4/4 bits).

The bits a layer computes with:

* weights: the bits of its ``weight_quantizer`` when it has one and it is enabled, else 32;
* activations: the bits of its ``act_quantizer`` when it has one and it is enabled; else, when its input is the
  very tensor an enabled activation quantizer returned (e.g. a quantizer of the input image before a
  full-precision conv), that quantizer's bits; else 32.

Only convs and linears are counted, as in the papers: BN, ReLU, the (quantized) residual and FPN adds, pooling,
upsampling and the fake quantizers' own element-wise work are not. :func:`count_bops` runs one forward pass
eagerly with forward hooks (no tracing), so it also works where a jit trace does not, and a layer called several
times (the head convs shared by the FPN levels) counts every call.
"""
import math
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from torch import nn
from torch.nn.modules.conv import _ConvNd

from .quantizers.base import BaseQuantizer

#: bits of a full-precision weight or activation
FP_BITS = 32


@dataclass
class LayerBops:
    """One conv / linear layer: MACs summed over its calls and the bits it computes with."""

    name: str
    kind: str
    weight_bits: int
    act_bits: int
    macs: int = 0
    calls: int = 0

    @property
    def bops(self) -> int:
        return self.macs * self.weight_bits * self.act_bits


@dataclass
class BopsReport:
    """The layers of one forward pass, in the order they were first called."""

    layers: List[LayerBops] = field(default_factory=list)

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def bops(self) -> int:
        return sum(layer.bops for layer in self.layers)

    @property
    def fp_bops(self) -> int:
        """The BOPs of the same layers at full precision (MACs x 32 x 32)."""
        return self.macs * FP_BITS * FP_BITS

    def by_bits(self) -> Dict[Tuple[int, int], Tuple[int, int, int]]:
        """``{(weight bits, activation bits): (layers, MACs, BOPs)}``, widest first."""
        out: Dict[Tuple[int, int], Tuple[int, int, int]] = {}
        for layer in self.layers:
            n, macs, bops = out.get((layer.weight_bits, layer.act_bits), (0, 0, 0))
            out[(layer.weight_bits, layer.act_bits)] = (n + 1, macs + layer.macs, bops + layer.bops)
        return dict(sorted(out.items(), key=lambda kv: (-kv[0][0] * kv[0][1], kv[0])))

    def summary(self) -> str:
        """The MACs and BOPs per bit pair, as a text table."""
        total = self.bops or 1
        rows = [f'{"bits (W/A)":>10}  {"layers":>6}  {"MACs":>10}  {"BOPs":>10}  {"share of BOPs":>13}']
        for (w, a), (n, macs, bops) in self.by_bits().items():
            rows.append(f'{f"{w}/{a}":>10}  {n:>6}  {si(macs):>10}  {si(bops):>10}  {100 * bops / total:>12.1f}%')
        return '\n'.join(rows)

    def table(self) -> str:
        """One row per layer: name, type, bits, calls, MACs, BOPs."""
        width = max([len(layer.name) for layer in self.layers] + [5])
        rows = [f'{"layer":<{width}}  {"type":<10}  {"W":>2}  {"A":>2}  {"calls":>5}  {"MACs":>10}  {"BOPs":>10}']
        for layer in self.layers:
            rows.append(f'{layer.name:<{width}}  {layer.kind:<10}  {layer.weight_bits:>2}  {layer.act_bits:>2}  '
                        f'{layer.calls:>5}  {si(layer.macs):>10}  {si(layer.bops):>10}')
        return '\n'.join(rows)


def si(n: float) -> str:
    """``n`` with an SI prefix (K, M, G, T), three significant decimals."""
    for unit, scale in (('T', 1e12), ('G', 1e9), ('M', 1e6), ('K', 1e3)):
        if abs(n) >= scale:
            return f'{n / scale:.3f}{unit}'
    return str(int(n))


def _enabled_bits(quantizer: Optional[nn.Module]) -> Optional[int]:
    if isinstance(quantizer, BaseQuantizer) and quantizer.enabled:
        return quantizer.bits
    return None


def layer_macs(module: nn.Module, x, out) -> int:
    """Multiply-accumulates of one call of a conv (any ``_ConvNd``) or linear on input ``x`` giving ``out``."""
    if isinstance(module, _ConvNd):
        per_weight = math.prod(module.kernel_size)
        if module.transposed:  # every input value meets C_out / groups x kernel weights
            return x.numel() * (module.out_channels // module.groups) * per_weight
        return out.numel() * (module.in_channels // module.groups) * per_weight
    return out.numel() * module.in_features  # nn.Linear


def count_bops(model: nn.Module, forward: Callable[[], Any]) -> BopsReport:
    """Run ``forward()`` (one forward pass of ``model``) and count the MACs and BOPs of its convs and linears.

    ``forward`` is called once, as it is (the caller sets eval mode / ``torch.no_grad``); the hooks are removed
    afterwards. Layers not called by ``forward`` are not in the report.
    """
    names = {m: n for n, m in model.named_modules()}
    quantized: Dict[int, Tuple[weakref.ref, int]] = {}  # id(tensor) -> (the tensor, bits) an act quantizer returned
    layers: Dict[Tuple[str, int, int], LayerBops] = {}

    def quantizer_hook(q: BaseQuantizer, args, out) -> None:
        if q.enabled and q.role == 'act' and hasattr(out, 'numel'):
            quantized[id(out)] = (weakref.ref(out), q.bits)

    def input_bits(x) -> int:
        ref, bits = quantized.get(id(x), (None, FP_BITS))
        return bits if ref is not None and ref() is x else FP_BITS

    def layer_hook(m: nn.Module, args, out) -> None:
        x = args[0]
        w = _enabled_bits(getattr(m, 'weight_quantizer', None)) or FP_BITS
        a = _enabled_bits(getattr(m, 'act_quantizer', None)) or input_bits(x)
        key = (names.get(m, type(m).__name__), w, a)
        layer = layers.setdefault(key, LayerBops(key[0], type(m).__name__, w, a))
        layer.macs += layer_macs(m, x, out)
        layer.calls += 1

    handles = []
    try:
        for m in model.modules():
            if isinstance(m, BaseQuantizer):
                handles.append(m.register_forward_hook(quantizer_hook))
            elif isinstance(m, (_ConvNd, nn.Linear)):
                handles.append(m.register_forward_hook(layer_hook))
        forward()
    finally:
        for h in handles:
            h.remove()
    return BopsReport(list(layers.values()))
