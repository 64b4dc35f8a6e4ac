"""A training run must not overwrite or delete what its work dir already holds (used by ``tools/train.py``).

mmengine writes into the work dir without looking: ``iter_<n>.pth`` / ``epoch_<n>.pth`` checkpoints (and deletes the
oldest beyond ``max_keep_ckpts``, whoever wrote them), ``last_checkpoint``, and the config dump
``<config name>.py``. :func:`files_at_risk` lists what a new run would overwrite or delete there:

* every checkpoint (``*.pth``) and ``last_checkpoint``, in the work dir and in the checkpoint hook's ``out_dir``
  (``<out_dir>/<work dir name>``) when the config sets one;
* ``<config name>.py`` when it differs from this run's config (an identical dump is rewritten with the same text).

Everything else stays allowed, notably mmengine's timestamped log folders (``20240101_120000/``) of earlier runs:
a run writes its own new folder and never touches them. :func:`check_work_dir` raises a ``FileExistsError``
naming the files and the ways out (another ``--work-dir``, ``--resume``, ``--overwrite``).
"""
import glob
import os.path as osp
from typing import List, Optional

CHECKPOINT_PATTERNS = ('*.pth', 'last_checkpoint')


def _checkpoints(folder: str) -> List[str]:
    found = set()
    for pattern in CHECKPOINT_PATTERNS:
        found.update(p for p in glob.glob(osp.join(glob.escape(folder), pattern)) if osp.isfile(p))
    return sorted(found)


def _checkpoint_dir(work_dir: str, out_dir: Optional[str]) -> Optional[str]:
    """Where mmengine's CheckpointHook saves when its ``out_dir`` is set (``None``: the work dir)."""
    if not out_dir or '://' in str(out_dir):
        return None
    return osp.join(str(out_dir), osp.basename(osp.abspath(work_dir).rstrip(osp.sep)))


def files_at_risk(work_dir: str, config_name: Optional[str] = None, config_text: Optional[str] = None,
                  checkpoint_out_dir: Optional[str] = None) -> List[str]:
    """The files of ``work_dir`` (and of the checkpoint ``out_dir``) that a new run would overwrite or delete.

    Args:
        work_dir: the run's work dir (need not exist).
        config_name: file name of the config dump, ``basename(cfg.filename)``; ``None``: no dump.
        config_text: what the run dumps there (``cfg.pretty_text``); a dump with other text is at risk.
        checkpoint_out_dir: ``default_hooks.checkpoint.out_dir`` of the config, if set.
    """
    if not osp.isdir(work_dir):
        return []
    risky = _checkpoints(work_dir)
    ckpt_dir = _checkpoint_dir(work_dir, checkpoint_out_dir)
    if ckpt_dir and osp.isdir(ckpt_dir) and osp.abspath(ckpt_dir) != osp.abspath(work_dir):
        risky += [p for p in _checkpoints(ckpt_dir) if not p.endswith('last_checkpoint')]
    if config_name:
        dump = osp.join(work_dir, config_name)
        if osp.isfile(dump):
            with open(dump, encoding='utf-8', errors='replace') as f:
                if config_text is None or f.read() != config_text:
                    risky.append(dump)
    return risky


def check_work_dir(work_dir: str, config_name: Optional[str] = None, config_text: Optional[str] = None,
                   checkpoint_out_dir: Optional[str] = None) -> None:
    """Raise ``FileExistsError`` when :func:`files_at_risk` finds anything, naming the files and the ways out."""
    risky = files_at_risk(work_dir, config_name, config_text, checkpoint_out_dir)
    if not risky:
        return
    lines = []
    for path in risky:
        if config_name and path == osp.join(work_dir, config_name):
            why = 'a config file that differs from this run\'s config; the run writes its config dump there'
        elif path.endswith('last_checkpoint'):
            why = 'the pointer --resume follows; the run rewrites it'
        else:
            why = ('a checkpoint; the run saves its own under such names and deletes the oldest beyond '
                   'max_keep_ckpts')
        lines.append(f'  {path}  ({why})')
    raise FileExistsError(
        f'work dir {work_dir} holds {len(risky)} file(s) that this run would overwrite or delete:\n'
        + '\n'.join(lines) + '\n'
        'Choose a new --work-dir, continue the run that wrote them with --resume, or pass --overwrite to train '
        'into this folder anyway.')
