"""Loading a checkpoint into a model must either load every weight or stop with the keys that did not load.

mmengine's ``Runner.load_checkpoint`` loads ``load_from`` with ``strict=False``: a checkpoint of another
architecture (e.g. a RetinaNet one given to an FCOS config) loads whatever matches, prints the rest to stdout
only, and training goes on with random layers. mmaqd checks both sides of a load instead:

* :func:`check_checkpoint_file` reads the file the way mmengine will (``torch.load(weights_only=True)``; through
  a memory map for the zip format, so no tensor data is read) and turns a truncated or non-checkpoint file into a
  :class:`CheckpointFileError` naming it.
* :func:`record_load` watches the next ``load_state_dict`` of a model (mmengine's or torch's) through the
  model's own load-state-dict hooks and reports what did not load (:class:`LoadReport`): keys the model missed,
  keys it does not have, and tensors of another shape. What the model's loaders accept by design is not
  reported: quantizer state that a full-precision checkpoint lacks (``BaseQuantizer``), a shared BN loaded into
  every level of a multi-level BN (``MultiLevelNorm``), the auxiliary branch copied from the main one (Auxi), and
  BN ``num_batches_tracked`` (as mmengine).

:class:`~mmaqd.engine.hooks.strict_load_hook.StrictLoadHook` applies both to every ``load_from`` / ``--resume``
of a run; a config opts out of the key check with ``load_from_strict = False`` (:data:`OPT_OUT`).
"""
import os
import os.path as osp
import re
import zipfile
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import torch
from torch import nn

#: The top-level config key that turns the key check into a logged warning.
OPT_OUT = 'load_from_strict'

_SIZE_MISMATCH = re.compile(r'^size mismatch for (?P<key>\S+): copying a param with shape (?P<ckpt>.+) from '
                            r'checkpoint, the shape in current model is (?P<model>.+?)\.?$')


class CheckpointFileError(RuntimeError):
    """A checkpoint file that cannot be read, or holds no state dict."""


class CheckpointMismatchError(RuntimeError):
    """A checkpoint whose keys or shapes do not match the model it is loaded into."""


# --------------------------------------------------------------------------------------------- the file
def _reason(error: Exception) -> str:
    """The cause in ``error``'s message, without torch's advice to unpickle arbitrary code."""
    text = str(error)
    if 'WeightsUnpickler error:' in text:  # the safe unpickler met something that is not data
        detail = text.split('WeightsUnpickler error:', 1)[1].split('Check the documentation', 1)[0]
        return ('it holds Python objects other than tensors and plain data, which mmaqd does not unpickle '
                f'({" ".join(detail.split())})')
    first = text.strip().split('\n', 1)[0].split('. ', 1)[0].strip()
    return f'{type(error).__name__}: {first}' if first else type(error).__name__


def check_checkpoint_file(path: str, what: str = 'load_from') -> None:
    """Raise :class:`CheckpointFileError` naming ``path`` (given as ``what``) unless it is a readable checkpoint
    holding a state dict of tensors (bare, or under ``"state_dict"``). Paths with a scheme (``https://``,
    ``torchvision://`` ...) are left to mmengine's loaders."""
    if '://' in str(path):
        return
    if not osp.isfile(path):
        raise CheckpointFileError(f'{what} = {path}: no such file')
    size = os.path.getsize(path)
    try:
        # the zip format maps its tensors instead of reading them; the legacy format has to be read
        ckpt = torch.load(path, map_location='cpu', weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as e:  # noqa: BLE001  (torch's loaders raise many types)
        raise CheckpointFileError(
            f'{what} = {path} ({size} bytes) is not a readable PyTorch checkpoint ({_reason(e)}). Either it is '
            'truncated (an interrupted save or copy: save or copy it again) or it is not a checkpoint (point '
            f'{what} to a file written by mmengine or torch.save).') from None
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointFileError(
            f'{what} = {path} is a PyTorch file but holds no state dict of tensors (found '
            f'{type(ckpt).__name__}{" with keys " + str(sorted(ckpt)[:8]) if isinstance(ckpt, dict) else ""}); '
            'expected a model checkpoint (a dict with "state_dict", as mmengine saves it, or a bare state dict)')


# --------------------------------------------------------------------------------------------- the keys
@dataclass
class LoadReport:
    """What one ``load_state_dict`` did not load.

    Attributes:
        missing: model keys the checkpoint lacks (left at their initialisation).
        unexpected: checkpoint keys the model does not have (dropped).
        mismatched: ``(key, checkpoint shape, model shape)`` of tensors not loaded for their shape.
        errors: any other message of the loaders.
    """

    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[tuple] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched or self.errors)

    def describe(self) -> str:
        """The keys, one per line, grouped by kind."""
        parts = []
        for title, lines in (
                ('in the model but not in the checkpoint (left at initialisation)', self.missing),
                ('in the checkpoint but not in the model (dropped)', self.unexpected),
                ('of another shape (not loaded)',
                 [f'{k}: checkpoint {c}, model {m}' for k, c, m in self.mismatched]),
                ('other errors', self.errors)):
            if lines:
                parts.append(f'{len(lines)} key(s) {title}:\n' + '\n'.join(f'    {line}' for line in lines))
        return '\n'.join(parts)


def _shape(text: str) -> str:
    """``torch.Size([64, 256, 3, 3])`` as ``(64, 256, 3, 3)``."""
    m = re.fullmatch(r'torch\.Size\(\[(.*)\]\)', text.strip())
    return f'({m[1]})' if m else text.strip()


def _report(missing_keys: List[str], unexpected_keys: List[str], error_msgs: List[str]) -> LoadReport:
    report = LoadReport(missing=[k for k in missing_keys if not k.endswith('num_batches_tracked')],
                        unexpected=list(unexpected_keys))
    for msg in error_msgs:
        m = _SIZE_MISMATCH.match(str(msg).strip())
        if m:
            report.mismatched.append((m['key'], _shape(m['ckpt']), _shape(m['model'])))
        else:
            report.errors.append(str(msg).strip())
    return report


class LoadRecorder:
    """Records the next ``load_state_dict`` of ``model`` and calls ``on_done(report)`` at its end.

    Uses the root module's load-state-dict pre-hook (which sees the loader's list of error messages: shape
    mismatches) and post-hook (which sees the final missing / unexpected keys, after every submodule's own
    loader adjusted them). Both hooks are removed when the load ends, or by :meth:`remove`.
    """

    def __init__(self, model: nn.Module, on_done: Callable[[LoadReport], None]):
        self.on_done = on_done
        self._errors: Optional[list] = None
        self._handles = [model.register_load_state_dict_pre_hook(self._pre),
                         model.register_load_state_dict_post_hook(self._post)]

    def _pre(self, module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        self._errors = error_msgs  # the loader's own list: children append shape mismatches to it

    def _post(self, module, incompatible_keys) -> None:
        self.remove()
        self.on_done(_report(incompatible_keys.missing_keys, incompatible_keys.unexpected_keys,
                             self._errors or []))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @property
    def active(self) -> bool:
        return bool(self._handles)


def record_load(model: nn.Module, on_done: Callable[[LoadReport], None]) -> LoadRecorder:
    """Call ``on_done(report)`` at the end of ``model``'s next ``load_state_dict`` (see :class:`LoadRecorder`)."""
    return LoadRecorder(model, on_done)


def mismatch_message(report: LoadReport, source: str, model: nn.Module) -> str:
    """The error for a strict load of ``source`` (e.g. ``load_from = x.pth``) into ``model`` that left keys."""
    return (f'{source} does not match the model ({type(model).__name__}):\n{report.describe()}\n'
            'Load a checkpoint of this architecture: for a quantized config, the checkpoint of the full-precision '
            'config it fine-tunes from (quantizer state that a full-precision checkpoint lacks is expected and '
            'not reported here). If a partial load is intended (e.g. a stock mmdet checkpoint converted with '
            'tools/model_converters/mmdet_to_aqd.py, which lists what it could not map), set '
            f'`{OPT_OUT} = False` in the config or pass `--cfg-options {OPT_OUT}=False`; the keys are then logged '
            'as a warning and training starts from the partial load.')
