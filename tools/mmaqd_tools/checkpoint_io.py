"""Reading a checkpoint for a conversion tool safely (tools/model_converters/*).

Both converters take ``SRC DST [--force] [--trust-checkpoint]``: the output must be a new file (never the input;
an existing one only with ``--force``), the input is unpickled with ``weights_only=True`` unless the user trusts
it, and it must hold a state dict of tensors (bare, or under ``"state_dict"`` as mmengine writes it).
"""
import argparse
import os.path as osp
from typing import Dict, Tuple

import torch


def add_conversion_args(parser: argparse.ArgumentParser) -> None:
    """The ``--force`` / ``--trust-checkpoint`` options every converter takes."""
    parser.add_argument('--force', action='store_true', help='overwrite an existing dst (never src)')
    parser.add_argument('--trust-checkpoint', action='store_true',
                        help='unpickle src with weights_only=False (runs code from the file; trusted files only)')


def read_state_dict(parser: argparse.ArgumentParser,
                    args: argparse.Namespace) -> Tuple[Dict[str, torch.Tensor], dict]:
    """``(state_dict, meta)`` of ``args.src`` after checking ``args.dst``; every problem is a ``parser.error``
    naming it. ``meta`` is the checkpoint's mmengine metadata (``{}`` for a bare state dict)."""
    if osp.exists(args.dst):
        if osp.exists(args.src) and osp.samefile(args.src, args.dst):
            parser.error(f'dst {args.dst} is the input checkpoint; write the result to a new file')
        if not args.force:
            parser.error(f'dst {args.dst} exists; pass --force to overwrite it')
    from mmaqd.engine.checkpoint_compat import allow_mmengine_checkpoints
    allow_mmengine_checkpoints()  # mmengine's own checkpoints hold its message hub: let the safe unpickler read it
    try:
        ckpt = torch.load(args.src, map_location='cpu', weights_only=not args.trust_checkpoint)
    except Exception as e:  # noqa: BLE001  (the safe unpickler's errors have many types)
        if args.trust_checkpoint:
            raise
        parser.error(f'cannot load {args.src} with weights_only=True ({type(e).__name__}: {e}); '
                     'for a checkpoint you trust pass --trust-checkpoint')
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        parser.error(f'{args.src} holds no state_dict of tensors (expected a dict, or one with "state_dict")')
    meta = dict(ckpt.get('meta') or {}) if 'state_dict' in ckpt else {}
    return state, meta
