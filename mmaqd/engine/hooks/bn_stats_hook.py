"""Record per-FPN-level batch statistics at chosen BN layers during training (AQD, arXiv 2007.06919v1,
section 3.2 and Figure 1).

AQD's case for multi-level BN: a head BN shared by all pyramid levels sees inputs whose batch statistics differ
from level to level once the network is quantized (Figure 1: histograms of batch mean / variance at a head BN of a
2-bit FCOS, one per level). Every ``interval`` training iterations :class:`BNStatsHook` records the per-channel
batch mean and (biased, as BN normalizes with) variance over (N, H, W) of each chosen layer's input, per level: a
multi-level norm (has ``current_level``, e.g. ``MultiLevelNorm``) reports its level, a plain BN shared across
levels gets it from its call order within the iteration. Only the main process records (its local batch).
File ``<work_dir>/<out_file>`` (``torch.save`` of a plain dict; every ``interval * 10`` iters and after training),
drawn by ``tools/analysis/plot_bn_stats.py``::

    {layer_name: {level (int, 0 = first head level, e.g. P3): {'mean': Tensor[T, C], 'var': Tensor[T, C],
                                                               'iters': list of T ints (1-based iteration)}}}

Usage: ``custom_hooks = [dict(type='BNStatsHook', layers=['bbox_head.cls_convs.3.*'], interval=50)]``.
"""
import fnmatch
import os.path as osp
from typing import Dict, List, Optional, Tuple

import torch
from mmdet.registry import HOOKS
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from torch import nn

from .utils import unwrap_model


def batch_mean_var(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance of ``x`` (N, C, ...) over every dim but 1, in float32: (C,), (C,)."""
    x = x.detach().float()
    var, mean = torch.var_mean(x, dim=[0] + list(range(2, x.dim())), unbiased=False)
    return mean, var


def norm_candidates(model: nn.Module) -> Dict[str, nn.Module]:
    """BN layers and multi-level norms of ``model`` by name; the BNs inside a multi-level norm are left out."""
    out: Dict[str, nn.Module] = {}
    for name, m in model.named_modules():
        if any(name.startswith(p + '.') for p, c in out.items() if hasattr(c, 'current_level')):
            continue
        if hasattr(m, 'current_level') or isinstance(m, nn.modules.batchnorm._BatchNorm):
            out[name] = m
    return out


def resolve_layers(model: nn.Module, layers: List[str]) -> Dict[str, nn.Module]:
    """The candidate modules named by ``layers`` (names or fnmatch patterns); an unmatched entry is an error."""
    cands = norm_candidates(model)
    chosen: Dict[str, nn.Module] = {}
    for pat in layers:
        hits = [n for n in cands if fnmatch.fnmatchcase(n, pat)]
        if not hits:
            raise ValueError(f'BNStatsHook: layer {pat!r} matches no BN / multi-level norm layer of the model; '
                             f'candidates: {list(cands)}')
        chosen.update((n, cands[n]) for n in hits)
    return chosen


class LevelStatsRecorder:
    """Forward pre-hooks recording :func:`batch_mean_var` of each module's input per level while ``step`` is set."""

    def __init__(self, modules: Dict[str, nn.Module]) -> None:
        self.modules = modules
        self.entries: Dict[str, Dict[int, list]] = {name: {} for name in modules}  # level -> [(step, mean, var)]
        self._handles: list = []
        self.set_step(None)  # self.step: the iteration being recorded; None: not recording

    def attach(self) -> None:
        for name, m in self.modules.items():
            self._handles.append(m.register_forward_pre_hook(lambda mod, args, name=name: self._hook(name, mod, args)))

    def detach(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    def set_step(self, step: Optional[int]) -> None:
        """Record the following forwards as iteration ``step`` (``None``: stop); call-order levels restart at 0."""
        self.step, self._calls = step, {name: 0 for name in self.modules}

    def _hook(self, name: str, module: nn.Module, args: tuple) -> None:
        if self.step is None:
            return
        level = getattr(module, 'current_level', None)
        level = self._calls[name] if level is None else int(level)
        self._calls[name] += 1
        mean, var = batch_mean_var(args[0])
        self.entries[name].setdefault(level, []).append((self.step, mean.cpu(), var.cpu()))

    def load(self, records: dict, max_step: int) -> None:
        """Take the entries of a saved ``records`` dict up to iteration ``max_step`` for the watched layers."""
        for name in self.modules:
            for lvl, r in records.get(name, {}).items():
                kept = [e for e in zip(r['iters'], r['mean'], r['var']) if e[0] <= max_step]
                if kept:
                    self.entries[name][lvl] = kept

    def as_dict(self) -> dict:
        """The records in the file format of this module's docstring."""
        return {name: {lvl: {'mean': torch.stack([e[1] for e in es]), 'var': torch.stack([e[2] for e in es]),
                             'iters': [e[0] for e in es]} for lvl, es in sorted(levels.items())}
                for name, levels in self.entries.items()}


@HOOKS.register_module()
class BNStatsHook(Hook):
    """Every ``interval`` iterations, record per-level batch statistics of the inputs of ``layers``.

    Args:
        layers: module names or fnmatch patterns of BN / multi-level norm layers, e.g. ``'bbox_head.cls_convs.3.*'``.
        interval: record every ``interval`` training iterations.
        out_file: file name under ``runner.work_dir``. On resume, its records up to the resumed iteration are kept.
    """

    def __init__(self, layers: List[str], interval: int = 50, out_file: str = 'bn_stats.pth') -> None:
        if isinstance(layers, str) or not layers or not all(isinstance(x, str) for x in layers):
            raise TypeError(f'BNStatsHook: layers must be a non-empty list of names / patterns, got {layers!r}')
        if not isinstance(interval, int) or interval < 1:
            raise ValueError(f'BNStatsHook: interval must be an int >= 1, got {interval!r}')
        self.layers, self.interval, self.out_file = list(layers), interval, out_file
        self.recorder: Optional[LevelStatsRecorder] = None

    def before_train(self, runner) -> None:
        modules = resolve_layers(unwrap_model(runner.model), self.layers)  # errors on every rank alike
        if not is_main_process():
            return
        self.recorder = LevelStatsRecorder(modules)
        path = osp.join(runner.work_dir, self.out_file)
        if runner.iter > 0 and osp.isfile(path):  # resumed: keep what was recorded up to this iteration
            self.recorder.load(torch.load(path, map_location='cpu'), max_step=runner.iter)
        self.recorder.attach()
        runner.logger.info(f'BNStatsHook: recording every {self.interval} iters at {list(modules)} -> {path}')

    def before_train_iter(self, runner, batch_idx: int, data_batch: Optional[dict] = None) -> None:
        if self.recorder is not None and self.every_n_train_iters(runner, self.interval):
            self.recorder.set_step(runner.iter + 1)

    def after_train_iter(self, runner, batch_idx: int, data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        if self.recorder is None:
            return
        self.recorder.set_step(None)
        if self.every_n_train_iters(runner, self.interval * 10):
            torch.save(self.recorder.as_dict(), osp.join(runner.work_dir, self.out_file))

    def after_train(self, runner) -> None:
        if self.recorder is not None:
            self.recorder.detach()
            torch.save(self.recorder.as_dict(), osp.join(runner.work_dir, self.out_file))
