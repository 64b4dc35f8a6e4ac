"""Strip the training-only auxiliary branch (``aux_*`` keys) from an Auxi checkpoint, for testing / deployment.

    python tools/model_converters/strip_auxiliary.py work_dirs/auxi/iter_90000.pth auxi_deploy.pth
    python tools/model_converters/strip_auxiliary.py CKPT OUT \\
        --config configs/auxi/retinanet_r18_fpn_auxi-w4a4_90k_coco.py   # also check a strict load

Auxi (mmaqd.models.detectors.auxi) trains a quantized detector with a full-precision auxiliary module
(``aux_adaptors``, ``aux_neck``, ``aux_head``) that is thrown away at inference. The output holds the
``state_dict`` without those keys and a ``meta`` entry (the input's meta plus what was stripped); the optimizer
and scheduler states, which refer to the auxiliary parameters too, are left out, so the output is for
``tools/test.py`` / export, not for resuming. It loads strictly into the same config's model built without the
auxiliary branch: ``tools/test.py CONFIG OUT --cfg-options model.aux_cfg=None``. With ``--config`` that load
is done here and its missing / unexpected keys are printed (the exit status is 1 if there are any).
The input file is never overwritten; an existing output is refused unless ``--force``.
"""
import argparse
import os
import os.path as osp
import sys
from collections import OrderedDict
from typing import List, Optional

import torch

from mmaqd.models.detectors.auxi import strip_auxiliary

sys.path.append(osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/, for mmaqd_tools
from mmaqd_tools.checkpoint_io import add_conversion_args, read_state_dict  # noqa: E402
from mmaqd_tools.models import build_cpu_model  # noqa: E402


def _strict_load_report(config: str, state_dict) -> List[str]:
    """Build ``config``'s model with ``aux_cfg=None`` and load ``state_dict`` into it; the problems found."""
    model = build_cpu_model(config, init_weights=False, aux_cfg=None)  # the checkpoint provides the weights
    result = model.load_state_dict(state_dict, strict=False)
    return [f'missing: {k}' for k in result.missing_keys] + [f'unexpected: {k}' for k in result.unexpected_keys]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help='Auxi checkpoint (.pth), e.g. written by tools/train.py')
    parser.add_argument('dst', help='checkpoint to write (a new file)')
    parser.add_argument('--config', help='the Auxi config: check that dst loads strictly with model.aux_cfg=None')
    add_conversion_args(parser)
    args = parser.parse_args(argv)
    state, meta = read_state_dict(parser, args)

    kept, removed = strip_auxiliary(state)
    if not removed:
        print(f'note: {args.src} has no auxiliary (aux_*) keys; written unchanged')
    modules = sorted({k.split('.', 1)[0] for k in removed})
    print(f'stripped {len(removed)} keys of {modules}, kept {len(kept)}')

    problems = _strict_load_report(args.config, kept) if args.config else []
    if args.config:
        print('\n'.join(f'  {p}' for p in problems) if problems else
              f'loads strictly into {args.config} with model.aux_cfg=None')

    meta.update(stripped_from=osp.abspath(args.src), converter='strip_auxiliary', stripped_modules=modules)
    out = OrderedDict(state_dict=kept, meta=meta)
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    tmp = args.dst + '.tmp'
    torch.save(out, tmp)
    os.replace(tmp, args.dst)
    print(f'wrote {args.dst}')
    return 1 if problems else 0


if __name__ == '__main__':
    raise SystemExit(main())
