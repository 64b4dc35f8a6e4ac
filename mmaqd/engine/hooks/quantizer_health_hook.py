"""Log each quantizer's range and the share of its inputs it clips, every logging interval, for TensorBoard.

A quantized run can look fine in its loss while a range collapses (alpha -> 0, everything clipped) or never
tightens (nothing clipped, few levels used). Every ``interval`` training iterations (by default the LoggerHook's)
:class:`QuantizerHealthHook` records, per quantizer (``<name>``: its module name without the ``_quantizer``
suffix, e.g. ``backbone.layer1.0.conv1.act``):

* ``quant/<name>.<range>``: each tensor of its ``range_names`` after the iteration's step (LIQ / PACT ``alpha``,
  LSQ ``step_size`` and LSQ+ ``offset``, FQN ``lb`` / ``ub``); a per-channel range logs its mean over channels;
* ``quant/<name>.clip``: the share (0 to 1) of the input values of that iteration's forward passes that lie
  outside the quantizer's unclipped range (its ``clip_bounds``), over every call (a head conv's act quantizer runs
  once per FPN level); none for quantizers that never clip (DoReFa / PACT weights, FQN weights).

The values go to the message hub (``runner.message_hub.update_scalar``, not saved in checkpoints) and to the
visualizer's backends (``runner.visualizer.add_scalars``; ``vis_data/scalars.json`` and, with
``TensorboardVisBackend``, TensorBoard). They are sent to the backends here rather than through the LogProcessor,
which would print the hundreds of ``quant/`` values on every log line; one summary line (most clipped quantizer,
smallest range) goes to the text log instead.

Cost: nothing on other iterations. On a logging iteration forward hooks, attached in ``before_train_iter`` and
removed in ``after_train_iter``, compare each quantizer input once against its bounds. Opt in with
``configs/_base_/tensorboard.py`` or::

    custom_hooks = [..., dict(type='QuantizerHealthHook')]
"""
from typing import Dict, Optional

import torch
from mmdet.registry import HOOKS
from mmengine.hooks import Hook, LoggerHook

from mmaqd.quantization.mode import quantizers
from mmaqd.quantization.quantizers.base import BaseQuantizer

from .utils import unwrap_model

DEFAULT_INTERVAL = 50  # without an interval and without a LoggerHook to take it from
PREFIX = 'quant/'


def short_name(name: str) -> str:
    """``'backbone.conv1.act_quantizer'`` -> ``'backbone.conv1.act'``: the key under ``quant/``."""
    return name[:-len('_quantizer')] if name.endswith('_quantizer') else name


def clipped_count(q: BaseQuantizer, x: torch.Tensor) -> Optional[torch.Tensor]:
    """How many values of ``x`` lie outside ``q.clip_bounds(x)`` (a 0-d tensor, no sync); ``None``: never clips."""
    bounds = q.clip_bounds(x)
    if bounds is None:
        return None
    lo, hi = bounds  # each broadcastable against x
    return (x < lo).sum() + (x > hi).sum()  # ()


class ClipCounter:
    """Forward hooks counting, per quantizer, the input values it clips and the values it saw, while attached."""

    def __init__(self, named: Dict[str, BaseQuantizer]) -> None:
        self.named = named
        self.clipped: Dict[str, torch.Tensor] = {}  # name -> () count, summed over calls
        self.total: Dict[str, int] = {}
        self._handles: list = []

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def attach(self) -> None:
        self.clipped, self.total = {}, {}
        for name, q in self.named.items():
            self._handles.append(q.register_forward_hook(
                lambda mod, args, out, name=name: self._count(name, mod, args)))

    def detach(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    def _count(self, name: str, q: BaseQuantizer, args: tuple) -> None:
        if not q.enabled or getattr(q, 'calibrating', False):  # the input passed through unquantized
            return
        x = args[0].detach()
        with torch.no_grad():
            n = clipped_count(q, x)
        if n is None:
            return
        self.clipped[name] = self.clipped[name] + n if name in self.clipped else n
        self.total[name] = self.total.get(name, 0) + x.numel()

    def shares(self) -> Dict[str, torch.Tensor]:
        """name -> clipped share, a 0-d float tensor (no sync), for the quantizers that saw an input."""
        return {name: n.float() / self.total[name] for name, n in self.clipped.items()}


def range_values(named: Dict[str, BaseQuantizer]) -> Dict[str, torch.Tensor]:
    """``'<name>.<range>'`` -> the range tensor (mean over channels when per channel), 0-d, no sync."""
    out = {}
    for name, q in named.items():
        for attr in q.range_names:
            t = getattr(q, attr, None)
            if torch.is_tensor(t) and t.numel():
                out[f'{short_name(name)}.{attr}'] = t.detach().float().mean()
    return out


@HOOKS.register_module()
class QuantizerHealthHook(Hook):
    """Every ``interval`` iterations, log each quantizer's range and clipped share (see the module docstring).

    Args:
        interval: log every ``interval`` training iterations; ``None`` takes the LoggerHook's interval (50 without
            one), so the values line up with the loss curves.
    """

    priority = 'BELOW_NORMAL'

    def __init__(self, interval: Optional[int] = None) -> None:
        if interval is not None and (isinstance(interval, bool) or not isinstance(interval, int) or interval < 1):
            raise ValueError(f'QuantizerHealthHook: interval must be None or an int >= 1, got {interval!r}')
        self.interval = interval
        self.counter: Optional[ClipCounter] = None

    def before_train(self, runner) -> None:
        if self.interval is None:
            loggers = [h for h in runner.hooks if isinstance(h, LoggerHook)]
            self.interval = loggers[0].interval if loggers else DEFAULT_INTERVAL
        named = dict(quantizers(unwrap_model(runner.model)))
        if not named:
            runner.logger.warning('QuantizerHealthHook: the model has no quantizer; nothing to log')
            return
        self.counter = ClipCounter(named)
        runner.logger.info(f'QuantizerHealthHook: logging the range and clipped share of {len(named)} quantizers '
                           f"every {self.interval} iterations under '{PREFIX}'")

    def before_train_iter(self, runner, batch_idx: int, data_batch: Optional[dict] = None) -> None:
        if self.counter is not None and self.every_n_train_iters(runner, self.interval):
            self.counter.attach()

    def after_train_iter(self, runner, batch_idx: int, data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        if self.counter is None or not self.counter.attached:
            return
        self.counter.detach()
        scalars = self.collect()
        for key, value in scalars.items():
            runner.message_hub.update_scalar(key, value, resumed=False)
        runner.visualizer.add_scalars(scalars, step=runner.iter + 1)
        runner.logger.info(f'QuantizerHealthHook: {summary(scalars)}')

    def after_train(self, runner) -> None:
        if self.counter is not None:
            self.counter.detach()

    def collect(self) -> Dict[str, float]:
        """``quant/<name>.<range>`` and ``quant/<name>.clip`` as floats, in one host sync."""
        values = range_values(self.counter.named)
        values.update((f'{short_name(n)}.clip', s) for n, s in self.counter.shares().items())
        if not values:
            return {}
        keys = list(values)
        device = values[keys[0]].device
        floats = torch.stack([values[k].to(device) for k in keys]).tolist()  # one sync
        return {PREFIX + k: v for k, v in zip(keys, floats)}


def summary(scalars: Dict[str, float]) -> str:
    """One text-log line: the most clipped quantizer and the smallest alpha / step size."""
    clips = {k: v for k, v in scalars.items() if k.endswith('.clip')}
    ranges = {k: v for k, v in scalars.items() if k.endswith(('.alpha', '.step_size'))}
    parts = []
    if clips:
        k = max(clips, key=clips.get)
        parts.append(f'most clipped {k[len(PREFIX):]} = {clips[k]:.2%}')
    if ranges:
        k = min(ranges, key=ranges.get)
        parts.append(f'smallest range {k[len(PREFIX):]} = {ranges[k]:.4g}')
    return '; '.join(parts) or 'no range or clipped share to log'
