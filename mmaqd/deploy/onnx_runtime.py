"""Running an exported model in ONNX Runtime (CPU execution provider): sessions, the head outputs as mmdet reads
them, which convs ONNX Runtime's optimizer turned into integer kernels, and the agreement with the integer network.

Needs ``onnxruntime`` (``pip install -r requirements/deploy.txt``).
"""
import collections
import os
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from .verify import agreement_table, count_agreement

__all__ = ['ort_session', 'head_outputs', 'output_layout', 'grouped_outputs', 'kernel_counts', 'teacher_feeds',
           'onnx_agreement', 'output_units', 'INTEGER_CONV_OPS']

#: op types of ONNX Runtime's optimized graph that run a convolution with integer arithmetic
INTEGER_CONV_OPS = ('QLinearConv', 'NhwcQLinearConv', 'ConvInteger')
_FLOAT_CONV_OPS = ('Conv', 'FusedConv', 'NchwcConv')


def _ort():
    try:
        import onnxruntime
    except ImportError as e:  # pragma: no cover - exercised only without the optional dependency
        raise ImportError('running ONNX models needs onnxruntime: pip install -r requirements/deploy.txt') from e
    return onnxruntime


def ort_session(model, threads: Optional[int] = None, optimized_path: Optional[str] = None):
    """An ONNX Runtime CPU session of ``model`` (a path, serialized bytes or an ``onnx.ModelProto``) with all graph
    optimizations; ``optimized_path``: where to write the optimized graph (to count its integer kernels)."""
    ort = _ort()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    if optimized_path:
        so.optimized_model_filepath = optimized_path
    data = model if isinstance(model, (str, os.PathLike, bytes)) else model.SerializeToString()
    return ort.InferenceSession(data, so, providers=['CPUExecutionProvider'])


def head_outputs(session, image: torch.Tensor, feeds: Optional[Dict[str, np.ndarray]] = None) -> Dict[str, list]:
    """Run ``session`` on the normalized image (N, 3, H, W); ``{output name: ndarray}``."""
    inputs = {'image': image.detach().float().contiguous().numpy()}
    inputs.update(feeds or {})
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs)))


def output_layout(session) -> Tuple[List[str], int]:
    """``(head output names, number of levels)`` of an exported model, from its metadata (read once per session)."""
    meta = session.get_modelmeta().custom_metadata_map
    return meta['output_names'].split(','), int(meta['num_levels'])


def grouped_outputs(results: Dict[str, np.ndarray], layout: Tuple[List[str], int]) -> Dict[str, List[torch.Tensor]]:
    """``{head output: [per-level tensor]}`` from the ``<name>_<level>`` outputs (``layout``: :func:`output_layout`)."""
    names, levels = layout
    return {n: [torch.from_numpy(results[f'{n}_{lv}']) for lv in range(levels)] for n in names}


def kernel_counts(optimized_path: str) -> Dict[str, int]:
    """Convolutions in ONNX Runtime's optimized graph: ``{'integer': n, 'float': n, 'ops': {op type: n}}``."""
    import onnx
    ops = collections.Counter(n.op_type for n in onnx.load(optimized_path).graph.node)
    return dict(integer=sum(ops[o] for o in INTEGER_CONV_OPS), float=sum(ops[o] for o in _FLOAT_CONV_OPS),
                ops=dict(ops.most_common()))


def teacher_feeds(export, reference: Dict[str, torch.Tensor]) -> Dict[str, np.ndarray]:
    """The graph inputs of an export made with ``probes='teacher'``: each op's inputs as ``reference`` has them
    ({probe: int32 values}), on the ONNX model's integer carriers."""
    return {name: (reference[p].to(torch.int32) + zp).numpy().astype(dt) for p, (name, dt, zp) in export.feeds.items()}


def onnx_agreement(export, results: Dict[str, np.ndarray], reference: Dict[str, torch.Tensor],
                   counts: Optional[dict] = None, step_of=None) -> dict:
    """Per quantizer ``[values, equal, within one step, max steps]`` of ONNX Runtime's integer values (``results``
    of :func:`head_outputs` on an export made with ``probes``) against ``reference`` ({probe: int32 values}, e.g.
    :func:`mmaqd.deploy.verify.fake_values` or the integer network's).

    With ``probes='teacher'`` (and :func:`teacher_feeds` of the reference) every op was fed the reference's values
    of its inputs (per-op arithmetic); with ``probes='outputs'`` both ran end to end. ``step_of(probe)``: the value
    step (:func:`mmaqd.deploy.verify.value_step`; 1 when not given).
    """
    counts = counts if counts is not None else agreement_table()
    for probe, out in export.probes.items():
        count_agreement(counts, probe, torch.from_numpy(results[out]), reference[probe],
                        step_of(probe) if step_of else 1)
    return counts


def output_units(net) -> Dict[str, List[Optional[torch.Tensor]]]:
    """Per head output and level, the real value (C,) of one unit of the prediction conv's integer product
    ``s_x s_w`` (times FCOS's Scale), the step in which output differences are reported; ``None`` for a float
    island output."""
    from .network import layer_key
    units = {}
    for name, sources in zip(net.output_names, net.output_sources):
        units[name] = []
        for source in sources:
            if source is None:
                units[name].append(None)
                continue
            layer, j, level = source
            conv = net.layers[layer_key(layer)]
            units[name].append(getattr(conv, f'scale_{j}')[level].abs() * 2 ** conv.spec['frac_bits'])  # (C,)
    return units
