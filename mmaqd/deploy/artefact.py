"""The integer artefact: a directory that holds a converted detector.

    DIR/integer_model.py    mmdet config of the integer model (IntegerFCOS / IntegerRetinaNet), with the data
                            and evaluator of the trained config: mmdet's tools/test.py runs it as any config
    DIR/integer_model.pth   checkpoint; its state_dict holds only the integer tensors (``net.*``: packed weight
                            codes, int32 biases, multipliers and shifts, per-level tables; float islands' weights)
    DIR/graph.json          the network spec (layers, nodes, probes) and a readable report: per layer the bits,
                            grids and scales, fractional bits F, accumulator bound; float islands; sizes

Reading it back (:func:`load_network`) needs torch and :mod:`mmaqd.ops` only: no training modules, no training
checkpoint, no mmdet.
"""
import json
import os
import os.path as osp
from typing import Dict, Optional

import torch

from .network import IntegerNetwork

__all__ = ['CONFIG_NAME', 'CHECKPOINT_NAME', 'GRAPH_NAME', 'FORMAT', 'write_network_files', 'load_network',
           'read_graph', 'check_out_dir', 'state_dict_bytes']

CONFIG_NAME = 'integer_model.py'
CHECKPOINT_NAME = 'integer_model.pth'
GRAPH_NAME = 'graph.json'
FORMAT = 'mmaqd-integer-1'


def check_out_dir(out_dir: str, force: bool) -> None:
    """Refuse to write into a directory holding an artefact (any of its files) unless ``force``."""
    existing = [n for n in (CONFIG_NAME, CHECKPOINT_NAME, GRAPH_NAME) if osp.exists(osp.join(out_dir, n))]
    if existing and not force:
        raise FileExistsError(f'{out_dir} already holds an artefact ({", ".join(existing)}); pass --force to '
                              'overwrite it, or choose another --out')
    if osp.exists(out_dir) and not osp.isdir(out_dir):
        raise NotADirectoryError(f'--out {out_dir} exists and is not a directory')


def state_dict_bytes(state: Dict[str, torch.Tensor]) -> int:
    """Bytes of the tensors' data."""
    return sum(t.numel() * t.element_size() for t in state.values())


def write_network_files(out_dir: str, net: IntegerNetwork, graph: dict, meta: Optional[dict] = None) -> str:
    """Write ``integer_model.pth`` (``net.*`` keys, as the mmdet wrapper's state_dict) and ``graph.json``, whose
    ``sizes.artefact_bytes`` records the checkpoint's size; returns the checkpoint path."""
    os.makedirs(out_dir, exist_ok=True)
    state = {f'net.{k}': v for k, v in net.state_dict().items()}
    ckpt = osp.join(out_dir, CHECKPOINT_NAME)
    torch.save(dict(state_dict=state, meta=dict(meta or {}, format=FORMAT)), ckpt)
    graph = dict(graph, sizes=dict(graph.get('sizes') or {}, artefact_bytes=osp.getsize(ckpt)))
    with open(osp.join(out_dir, GRAPH_NAME), 'w') as f:
        json.dump(dict(graph, format=FORMAT), f, indent=1)
    return ckpt


def read_graph(artefact_dir: str) -> dict:
    path = osp.join(artefact_dir, GRAPH_NAME)
    if not osp.isfile(path):
        raise FileNotFoundError(f'{artefact_dir} is not an mmaqd integer artefact: {GRAPH_NAME} is missing')
    with open(path) as f:
        graph = json.load(f)
    if graph.get('format') != FORMAT:
        raise ValueError(f'{path}: format {graph.get("format")!r}, expected {FORMAT!r}')
    return graph


def load_network(artefact_dir: str, map_location='cpu') -> IntegerNetwork:
    """The integer network of an artefact directory, with its tensors loaded (strictly)."""
    net = IntegerNetwork(**read_graph(artefact_dir)['spec'])
    ckpt = torch.load(osp.join(artefact_dir, CHECKPOINT_NAME), map_location=map_location, weights_only=True)
    state = {k[len('net.'):]: v for k, v in ckpt['state_dict'].items() if k.startswith('net.')}
    net.load_state_dict(state, strict=True)
    return net.eval()
