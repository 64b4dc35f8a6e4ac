"""Let mmengine 0.10.7 resume its own checkpoints under torch >= 2.6.

torch 2.6 made ``torch.load(weights_only=True)`` the default. mmengine's resume checkpoints carry its message
hub: ``HistoryBuffer`` objects of numpy arrays whose pickled state also names the class's statistics methods
(pickled as ``getattr(HistoryBuffer, 'min')``), which that safe unpickler refuses, so ``--resume`` fails with
"Weights only load failed". Rather than turning the safe loader off:

* ``HistoryBuffer`` is pickled without its statistics methods (they are class-level defaults, registered again
  on import, and mmengine's ``__setstate__`` already accepts a state without them), and
* the buffer class and the numpy types it holds are added to torch's allow-list.

Loading stays restricted to data, never arbitrary code. Checkpoints written before the call still hold the
``getattr`` entries and load only with ``weights_only=False``.

Both changes are made by an explicit call of :func:`allow_mmengine_checkpoints`, never by an import: once per
process, before mmengine saves or resumes. :func:`mmaqd.register_all_modules` makes it (so every run of an mmaqd
config, through mmdet's tools too, has it), and the checkpoint converters in ``tools/`` before they read a file.
"""
import numpy as np
import torch
from mmengine.logging import HistoryBuffer


def _numpy_globals() -> list:
    core = np._core if hasattr(np, '_core') else np.core  # numpy >= 2 renamed np.core
    dtypes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.float16, np.int64, np.int32, np.int16,
                                          np.int8, np.uint8, np.bool_)]
    return [core.multiarray._reconstruct, core.multiarray.scalar, np.ndarray, np.dtype] + dtypes


def _history_buffer_state(self) -> dict:
    """The buffer's data only: no ``statistics_methods`` (functions pickle as ``getattr`` calls)."""
    return {k: v for k, v in self.__dict__.items() if k != 'statistics_methods'}


def allow_mmengine_checkpoints() -> None:
    """Make mmengine's resume checkpoints loadable with ``torch.load(weights_only=True)`` (idempotent)."""
    HistoryBuffer.__getstate__ = _history_buffer_state
    if hasattr(torch.serialization, 'add_safe_globals'):
        torch.serialization.add_safe_globals([HistoryBuffer] + _numpy_globals())
