"""The table :func:`~mmaqd.quantization.quantize_model` logs: every conv / linear layer with its weight and input
(and output) quantizers or FP, every other module that holds quantizers (e.g. a QAdd), and a summary line."""
from typing import Optional

from torch import nn

from .quantizers.base import BaseQuantizer
from .registry import QUANTIZERS

__all__ = ['quantization_table']


def _describe(q: Optional[nn.Module], show_sign: bool) -> str:
    if q is None:
        return 'FP'
    if not isinstance(q, BaseQuantizer):
        return type(q).__name__
    names = [k for k, v in QUANTIZERS.module_dict.items() if v is type(q)]  # the name configs use
    s = f'{names[0] if names else type(q).__name__} {q.bits}b'
    if q.per_channel:
        s += ' per-ch'
    if show_sign:  # activations: signedness (auto until the first batch)
        s += ' ' + {None: 'auto', True: 'signed', False: 'unsigned'}[q.signed]
    return s + ('' if q.enabled else ' (off)')


def quantization_table(model: nn.Module) -> str:
    """A text table of every conv/linear layer (weight and input quantizers, or FP) and of every other module
    holding quantizers (e.g. QAdd: one ``<attribute>=<quantizer>`` entry per quantizer), with a summary line."""
    rows = [('layer', 'type', 'weight', 'input')]
    n_layers = n_q = 0
    for name, m in model.named_modules():
        name = name or '(model)'
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            wq, aq = getattr(m, 'weight_quantizer', None), getattr(m, 'act_quantizer', None)
            n_layers += 1
            n_q += wq is not None or aq is not None
            oq = getattr(m, 'out_quantizer', None)
            out = '' if oq is None else f'; out={_describe(oq, True)}'
            rows.append((name, type(m).__name__, _describe(wq, False), _describe(aq, True) + out))
        elif not isinstance(m, BaseQuantizer):
            qs = [(k, c) for k, c in m._modules.items() if isinstance(c, BaseQuantizer)]
            if qs:
                rows.append((name, type(m).__name__, '-', ', '.join(f'{k}={_describe(c, True)}' for k, c in qs)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ['  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, '  '.join('-' * w for w in widths))
    lines.append(f'{n_q} of {n_layers} conv/linear layers quantized, {n_layers - n_q} full precision')
    return '\n'.join(lines)
