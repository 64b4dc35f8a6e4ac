"""Convert a stock mmdet FCOS (GroupNorm head) or RetinaNet (no head norm) checkpoint for an AQD model.

    python tools/model_converters/mmdet_to_aqd.py fcos_r50-caffe_gn-head.pth fcos_r50-caffe_aqd-init.pth \\
        --config configs/aqd/fcos_r50-caffe_fpn_aqd-w4a4_90k_coco.py    # check against the model you will train
    python tools/model_converters/mmdet_to_aqd.py retinanet_r18.pth out.pth \\
        --config configs/retinanet/retinanet_r18_fpn_bn-head_90k_coco.py

What is mapped. AQD's heads are conv -> BN -> ReLU with multi-level BN (arXiv 2007.06919v1, sections 3.2, 4.3);
mmdet's stock heads are conv -> GN -> ReLU (FCOS) or conv(+bias) -> ReLU (RetinaNet). Kept under their own keys: the
backbone (convs and its BNs, e.g. the frozen caffe BNs of the zoo's R50), the FPN, the weights of the shared head tower
convs, the prediction convs (FCOS ``conv_cls`` / ``conv_reg`` / ``conv_centerness``, RetinaNet ``retina_cls`` /
``retina_reg``) and FCOS's per-level ``scales``. Dropped and printed by name: the GroupNorm of every head tower
conv and the tower convs' biases (the AQD convs have none: a BN follows). Starting fresh: the head BNs (one per
FPN level; gamma 1, beta 0, statistics 0 / 1) and all quantizer state, which the AQD config initialises from data
(``QuantizerInitHook``); fine-tune before evaluating. A shared-BN checkpoint of an mmaqd BN-head model needs no
conversion: MultiLevelNorm loads it into every level by itself.

What must match. Keys and shapes do not show a backbone's ``style`` (the zoo's FCOS R50 is caffe-style: stride on
the 1x1 conv), the input normalization (caffe: BGR, mean 102.98 / 115.95 / 122.77, std 1; mmaqd's R50 configs:
RGB, ImageNet mean / std) or FCOS's ``norm_on_bbox`` / ``centerness_on_reg``, and a checkpoint converted for the
wrong config loads there without a word and computes another network. The checkpoint's own config (``meta['cfg']``
of mmengine, ``meta['config']`` of mmdet 2.x; read as literals, never executed; or ``--src-config`` for a
checkpoint without one) is compared with ``--config``, and a difference is refused with both values
(:mod:`mmaqd_tools.model_convention`). ``configs/aqd/fcos_r50-caffe_fpn_aqd-w{4a4,3a3,2a2}_90k_coco.py`` match
mmdet's ``fcos_r50-caffe_fpn_gn-head_1x_coco``, ``configs/aqd/fcos_r50-caffe_fpn_aqd-w4a4-giou_90k_coco.py`` its
``fcos_r50-caffe_fpn_gn-head-center-normbbox-centeronreg-giou_1x_coco``.

With ``--config`` the result is also checked against that config's model: keys the model lacks or holds with
another shape are dropped and printed; the model's keys left at initialisation are listed (quantizer state, in no
full-precision checkpoint by design, only counted). The input file is never overwritten; an existing output is
refused unless ``--force``.

The head BNs of the result are not in the checkpoint, so load it with ``load_from_strict = False`` (or
``--cfg-options load_from_strict=False``): mmaqd's configs otherwise stop at a checkpoint that leaves model keys
unloaded (:mod:`mmaqd.engine.strict_load`). The ``fcos_r50-caffe`` configs set it, as they start from such a
checkpoint.
"""
import argparse
import os
import os.path as osp
import re
import sys
from collections import OrderedDict
from typing import Dict, List, Optional, Set, Tuple

import torch

from mmaqd.quantization import quantizers

sys.path.append(osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/, for mmaqd_tools
from mmaqd_tools.checkpoint_io import add_conversion_args, read_state_dict  # noqa: E402
from mmaqd_tools.config_text import checkpoint_config  # noqa: E402
from mmaqd_tools.model_convention import (ConventionMismatchError, check_convention, describe,  # noqa: E402
                                          model_convention)
from mmaqd_tools.models import build_cpu_model  # noqa: E402

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


def _model_state(config) -> Tuple[Dict[str, torch.Tensor], Set[str]]:
    """The state dict of ``config``'s model (a path or a loaded ``Config``), built without pretrained weights, and
    the keys of its quantizer state (absent from a full-precision checkpoint by design)."""
    model = build_cpu_model(config, init_weights=False)  # only the keys and shapes are needed
    state = model.state_dict()
    return state, {key for name, _ in quantizers(model) for key in state if key.startswith(name + '.')}


_HINT = ("Convert for an AQD config with the checkpoint's settings: for mmdet's zoo FCOS R50 "
         'fcos_r50-caffe_fpn_gn-head_1x_coco use configs/aqd/fcos_r50-caffe_fpn_aqd-w4a4_90k_coco.py (or -w3a3 / '
         '-w2a2), for fcos_r50-caffe_fpn_gn-head-center-normbbox-centeronreg-giou_1x_coco '
         'configs/aqd/fcos_r50-caffe_fpn_aqd-w4a4-giou_90k_coco.py; otherwise set these keys in your config.')


def source_convention(meta: dict, src_config: Optional[str]) -> Tuple[Optional[dict], str]:
    """``(convention, where from)`` of the checkpoint: from ``src_config`` when given, else from the config text in
    its ``meta``; ``(None, reason)`` when there is neither."""
    if src_config:
        from mmengine.config import Config
        return model_convention(Config.fromfile(src_config)), f'the checkpoint (--src-config {src_config})'
    cfg, where = checkpoint_config(meta)
    if cfg is None:
        return None, "the checkpoint carries no config (meta['cfg'] / meta['config'])"
    return model_convention(cfg), f'the checkpoint ({where})'


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
    parser.add_argument('--src-config', help='the mmdet config the checkpoint was trained with (default: the one '
                                             "in its meta['cfg'] / meta['config'], read without running it)")
    add_conversion_args(parser)
    args = parser.parse_args(argv)
    state, meta = read_state_dict(parser, args)
    try:
        src, src_name = source_convention(meta, args.src_config)
    except ValueError as e:  # embedded config text that is not Python
        parser.error(f'cannot read the config embedded in {args.src}: {e}; pass --src-config with the mmdet config '
                     'it was trained with')
    target = None
    if args.config:
        from mmengine.config import Config
        target = Config.fromfile(args.config)
    if src is None:
        print(f'{src_name}: its backbone style and input normalization are not checked; pass --src-config with '
              'the mmdet config it was trained with')
    elif target is None:
        print(f'settings of {src_name}: {describe(src)}; not checked against the config you will train: pass '
              '--config')
    else:
        try:
            unchecked = check_convention(src, model_convention(target), src_name, args.config, hint=_HINT)
        except ConventionMismatchError as e:
            parser.error(str(e))
        print(f'settings of {src_name} match {args.config}: {describe(src)}'
              + (f' (not readable on both sides, not compared: {", ".join(unchecked)})' if unchecked else ''))

    new, dropped = convert_state_dict(state)
    left: List[str] = []
    quantizer_left = 0
    if target is not None:
        model_state, quantizer_keys = _model_state(target)
        by_model, left = check_against_model(new, model_state)
        dropped.update(by_model)
        quantizer_left = sum(1 for k in left if k in quantizer_keys)
        left = [k for k in left if k not in quantizer_keys]
    _print_keys('could not map, dropped', dropped)
    if left:
        print(f'model keys not in the converted checkpoint, left at initialisation ({len(left)}):')
        print('\n'.join(f'  {k}' for k in left))
    if quantizer_left:
        print(f'quantizer state ({quantizer_left} tensors) is in no full-precision checkpoint; the config initialises '
              'it from data (QuantizerInitHook)')

    out = OrderedDict(state_dict=new, meta=dict(converted_from=osp.abspath(args.src), converter='mmdet_to_aqd',
                                                dropped=sorted(dropped), source_convention=src))
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
