"""A hook that records, on each process of a distributed test run, what the 2-process test compares across ranks.

Imported by the training processes that ``tests/test_engine/test_dist_train.py`` starts through
``tools/dist_train.sh`` (``custom_imports``, with ``tests/`` on ``PYTHONPATH``); not a test itself. Each rank
writes ``<out_dir>/rank<r>.pth`` with:

* ``fresh``: every data-init quantizer as it was before its initialisation (module copies), with ``inputs``: the
  tensor each one initialised from on this rank (its first input), so that the test can recompute the rank's
  local initialisation and check that the run's value is the mean over the ranks;
* ``after_init``: every quantizer's state right after ``QuantizerInitHook`` (before the first optimizer step);
* ``state_dict``, ``optimizer``, ``iter``: the model, optimizer and iteration at the end of training.
"""
import copy
import os
import os.path as osp

import torch
from mmdet.registry import HOOKS
from mmengine.dist import get_dist_info
from mmengine.hooks import Hook

from mmaqd.engine.hooks.utils import unwrap_model
from mmaqd.quantization.mode import quantizers
from resume_check import cpu_clone


@HOOKS.register_module()
class DistProbeHook(Hook):
    """Record the quantizers' initialisation and the final training state of this rank into ``out_dir``.

    ``priority='LOW'``: its ``before_train`` runs after ``QuantizerInitHook`` (``NORMAL``).
    """

    priority = 'LOW'

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.fresh, self.inputs, self.after_init, self._handles = {}, {}, {}, []

    def before_run(self, runner) -> None:
        for name, q in quantizers(unwrap_model(runner.model)):
            if q.data_init and q.enabled and not bool(q.initialized):
                self.fresh[name] = copy.deepcopy(q).cpu()
                self._handles.append(q.register_forward_pre_hook(self._recorder(name)))

    def _recorder(self, name: str):
        def record(module, args):
            if name not in self.inputs and not bool(module.initialized):
                self.inputs[name] = args[0].detach().cpu().clone()
        return record

    def before_train(self, runner) -> None:
        for handle in self._handles:
            handle.remove()
        self.after_init = {name: cpu_clone(q.state_dict()) for name, q in quantizers(unwrap_model(runner.model))}

    def after_train(self, runner) -> None:
        rank, world_size = get_dist_info()
        os.makedirs(self.out_dir, exist_ok=True)
        torch.save(dict(rank=rank, world_size=world_size, iter=runner.iter, fresh=self.fresh, inputs=self.inputs,
                        after_init=self.after_init, state_dict=cpu_clone(unwrap_model(runner.model).state_dict()),
                        optimizer=cpu_clone(runner.optim_wrapper.state_dict())),
                   osp.join(self.out_dir, f'rank{rank}.pth'))
