"""Convert a stock mmdet FCOS (GroupNorm head) or RetinaNet (no head norm) checkpoint for an AQD model.

    python tools/model_converters/mmdet_to_aqd.py fcos_r50_gn-head.pth fcos_r50_aqd-init.pth
    python tools/model_converters/mmdet_to_aqd.py retinanet_r18.pth out.pth \\
        --config configs/retinanet/retinanet_r18_fpn_bn-head_90k_coco.py      # also check against the model

AQD's heads are conv -> BN -> ReLU with multi-level BN (aqd.md 3.2, 4.3); mmdet's stock heads are
conv -> GN -> ReLU (FCOS) or conv(+bias) -> ReLU (RetinaNet). Backbone, FPN, the shared head convs' weights and
the prediction convs keep their keys. GroupNorm keys of the head towers and the biases of the tower convs (the
AQD convs have none: a BN follows) have no AQD counterpart: they are dropped and printed by name. The head BNs
start fresh (gamma 1, beta 0, statistics 0 / 1), so fine-tune before evaluating. A shared-BN checkpoint of an
mmaqd BN-head model needs no conversion: MultiLevelNorm loads it into every level by itself.

With ``--config`` the result is checked against that config's model: keys the model lacks or holds with
another shape are dropped and printed; the model's keys left at initialisation are listed. The input file is
never overwritten; an existing output is refused unless ``--force``.

The head BNs of the result are not in the checkpoint, so load it with ``load_from_strict = False`` (or
``--cfg-options load_from_strict=False``): mmaqd's configs otherwise stop at a checkpoint that leaves model keys
unloaded (:mod:`mmaqd.engine.strict_load`).
"""
import argparse
import os
import os.path as osp
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch

from mmaqd.engine.checkpoint_io import add_conversion_args, read_state_dict

# <head>.(cls|reg)_convs.<i>.<what>; <what> = gn.weight / gn.bias (FCOS GN) or conv.bias (RetinaNet, GN FCOS
# with conv_bias=True): none of them exists in a conv -> BN tower.
_TOWER = re.compile(r'^(?P<head>(?:.+\.)?bbox_head)\.(?:cls|reg)_convs\.\d+\.(?P<what>gn\.\w+|conv\.bias)$')


def convert_state_dict(state_dict: Dict[str, torch.Tensor]) -> Tuple['OrderedDict[str, torch.Tensor]',
                                                                        Dict[str, str]]:
    """``(kept, dropped)``: the keys an AQD model loads, and ``{dropped key: why}``."""
    kept, dropped = OrderedDict(), {}
    for key, value in state_dict.items():
        m = _TOWER.match(key)
        if m is None:
            kept[key] = value
        elif m['what'].startswith('gn.'):
            dropped[key] = 'GroupNorm of a head conv: the AQD head has a (multi-level) BN there'
        else:
            dropped[key] = 'bias of a head conv: the AQD head conv has no bias (a BN follows)'
    metadata = getattr(state_dict, '_metadata', None)
    if metadata is not None:  # keep module versions, so version-dependent loading stays right
        kept._metadata = OrderedDict(metadata)
    return kept, dropped


def check_against_model(state_dict: 'OrderedDict[str, torch.Tensor]', model_state: Dict[str, torch.Tensor]
                        ) -> Tuple[Dict[str, str], List[str]]:
    """Drop (in place) keys ``model_state`` lacks or holds with another shape; ``(dropped, left_at_init)``.

    A model key ``<p>.norms.<i>.<name>`` (MultiLevelNorm) counts as provided by ``<p>.<name>``.
    """
    dropped = {}
    for key in list(state_dict):
        if key not in model_state:
            dropped[key] = 'not a key of the model'
        elif tuple(state_dict[key].shape) != tuple(model_state[key].shape):
            dropped[key] = (f'shape {tuple(state_dict[key].shape)} in the checkpoint, '
                            f'{tuple(model_state[key].shape)} in the model')
        if key in dropped:
            del state_dict[key]
    shared = {re.sub(r'\.norms\.\d+\.', '.', k): k for k in model_state}
    left = sorted({re.sub(r'\.norms\.\d+\.', '.norms.*.', k) for s, k in shared.items()
                   if k not in state_dict and s not in state_dict})
    return dropped, left


def _model_state(config: str) -> Dict[str, torch.Tensor]:
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope

    import mmaqd  # noqa: F401  (registers the plugin)
    from mmdet.registry import MODELS
    cfg = Config.fromfile(config)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model_cfg = cfg.model.copy()
    if model_cfg.get('backbone', {}).get('init_cfg') is not None:
        model_cfg.backbone.init_cfg = None  # no download: only the keys and shapes are needed
    return revert_sync_batchnorm(MODELS.build(model_cfg)).state_dict()


def _print_keys(title: str, keys: Dict[str, str]) -> None:
    if keys:
        print(f'{title} ({len(keys)}):')
        for key, why in keys.items():
            print(f'  {key}: {why}')


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help='stock mmdet checkpoint (.pth)')
    parser.add_argument('dst', help='converted checkpoint to write (a new file)')
    parser.add_argument('--config', help='AQD model config to check the converted keys against')
    add_conversion_args(parser)
    args = parser.parse_args(argv)
    state, _ = read_state_dict(parser, args)


    new, dropped = convert_state_dict(state)
    left: List[str] = []
    if args.config:
        by_model, left = check_against_model(new, _model_state(args.config))
        dropped.update(by_model)
    _print_keys('could not map, dropped', dropped)
    if left:
        print(f'model keys not in the converted checkpoint, left at initialisation ({len(left)}):')
        print('\n'.join(f'  {k}' for k in left))

    out = OrderedDict(state_dict=new, meta=dict(converted_from=osp.abspath(args.src), converter='mmdet_to_aqd',
                                                dropped=sorted(dropped)))
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    tmp = args.dst + '.tmp'
    torch.save(out, tmp)
    os.replace(tmp, args.dst)
    print(f'wrote {args.dst}: {len(new)} keys kept, {len(dropped)} dropped')
    if dropped or left:
        print(f'the AQD model keys this checkpoint lacks start fresh; mmaqd refuses such a partial load unless the '
              f'config allows it: train with --cfg-options load_from={args.dst} load_from_strict=False')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
