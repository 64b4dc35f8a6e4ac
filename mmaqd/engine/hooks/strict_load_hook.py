"""Stop a run whose ``load_from`` / ``--resume`` checkpoint is unreadable or does not match the model.

mmengine loads ``load_from`` with ``strict=False`` and only prints what did not load, so a checkpoint of another
architecture trains on with random layers. This hook (in ``default_hooks`` of ``configs/_base_/default_runtime.py``,
so every mmaqd config, quantized or full precision, has it) uses :mod:`mmaqd.engine.strict_load`:

* ``before_run``: the checkpoint the run will load (``load_from``, or with ``resume`` and no ``load_from`` the
  latest one of the work dir) must be a readable checkpoint; otherwise a ``CheckpointFileError`` names the file.
* ``after_load_checkpoint`` (just before mmengine copies the weights): the load is recorded, and at its end any
  key that did not load is a ``CheckpointMismatchError`` naming the keys, also written to the work-dir log.
  Quantizer state that a full-precision checkpoint lacks is not a mismatch.

A config opts out of the key check with the top-level ``load_from_strict = False`` (e.g. for a stock mmdet
checkpoint converted by ``tools/model_converters/mmdet_to_aqd.py``, whose head norms start fresh); the keys are
then logged as a warning in the work-dir log.
"""
from typing import Optional

from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.model import BaseTTAModel
from mmengine.runner.checkpoint import find_latest_checkpoint

from ..strict_load import (OPT_OUT, CheckpointMismatchError, LoadRecorder, LoadReport, check_checkpoint_file,
                           mismatch_message, record_load)
from .utils import unwrap_model


def load_strict(runner) -> bool:
    """The config's ``load_from_strict`` (default True); any other value than a bool is a ValueError."""
    cfg = getattr(runner, 'cfg', None) or {}
    strict = cfg.get(OPT_OUT, True)
    if not isinstance(strict, bool):
        raise ValueError(f'{OPT_OUT}={strict!r} is invalid; it must be True (a checkpoint key that does not load '
                         'is an error) or False (it is logged as a warning)')
    return strict


def checkpoint_to_load(runner) -> Optional[str]:
    """What ``runner.load_or_resume`` will load: ``load_from``, or with ``resume`` and no ``load_from`` the
    latest checkpoint of the work dir (``None``: nothing)."""
    # mmengine has no public accessor for what load_or_resume() will load (Runner.__init__ stores these two)
    load_from = getattr(runner, '_load_from', None)
    resume = getattr(runner, '_resume', False)
    if load_from is None and resume:
        return find_latest_checkpoint(runner.work_dir)
    return load_from


@HOOKS.register_module()
class StrictLoadHook(Hook):
    """Checks the file in ``before_run`` and the loaded keys in ``after_load_checkpoint`` (module docstring)."""

    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self._source = 'the checkpoint'
        self._checked: Optional[str] = None
        self._recorder: Optional[LoadRecorder] = None

    def before_run(self, runner) -> None:
        load_strict(runner)
        path = checkpoint_to_load(runner)
        if path is None or path == self._checked:  # e.g. test() after train() on the same runner loads nothing
            return
        self._source = f"{'resume from' if getattr(runner, '_resume', False) else 'load_from ='} {path}"
        check_checkpoint_file(path, what='resume' if getattr(runner, '_resume', False) else 'load_from')
        self._checked = path

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._recorder is not None and self._recorder.active:  # an earlier load that ended in an error
            self._recorder.remove()
        model = unwrap_model(runner.model)
        if isinstance(model, BaseTTAModel):  # mmengine's loader loads into the wrapped model
            model = model.module
        strict = load_strict(runner)
        source = self._source

        def on_done(report: LoadReport) -> None:
            if report.ok:
                return
            if strict:
                message = mismatch_message(report, source, model)
                runner.logger.error(message)
                raise CheckpointMismatchError(message)
            runner.logger.warning(f'{source}: partial load ({OPT_OUT}=False):\n{report.describe()}')

        self._recorder = record_load(model, on_done)
