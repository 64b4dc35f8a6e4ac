"""The benchmark stages: one table for ``tools/pipeline.py`` and ``tools/benchmark/accuracy.py``.

A stage is a config trained in ``<work-dir>/<name>`` (:func:`mmaqd_tools.experiment.run_stage`); a quantized one
fine-tunes from the ``final.pth`` of its full-precision stage ``fp``. Both tools read this table and default to
the same work dir (``work_dirs/pipeline``), so they share finished stages: what one trained, the other evaluates.

The quantized configs also name their FP stage's weights themselves, ``load_from =
'work_dirs/pipeline/<fp>/final.pth'`` (so ``tools/train.py CONFIG`` alone fine-tunes from what ``make demo``
trained); the tools set ``load_from`` to ``<work-dir>/<fp>/final.pth`` of their own ``--work-dir``.
``tests/test_tools/test_accuracy_benchmark.py`` checks that every config names the ``fp`` of its row.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional


@dataclass(frozen=True)
class Variant:
    """One stage.

    Attributes:
        name: stage name (work dir ``<work-dir>/<name>``).
        config: config file, relative to the repo root.
        fp: the FP stage whose ``final.pth`` it fine-tunes from and whose AP it is compared with; ``None`` for an
            FP detector.
        bits: weight / activation bit width; ``None`` for an FP detector.
        what: one line for ``--list``.
        target: an AQD-recipe variant, held to the accuracy benchmark's AP gap for its bits; ablations and
            baselines are not.
        deploy: integer-deployable (first and last layers at 8 bits, ``-f8l8``): ``tools/pipeline.py`` converts
            its weights with ``tools/deploy.py`` after training.
    """

    name: str
    config: str
    fp: Optional[str]
    bits: Optional[int]
    what: str
    target: bool = True
    deploy: bool = False


_A = 'configs/aqd/'


def _ablation(suffix: str, what: str) -> Variant:
    """A 2-bit FCOS ablation of configs/aqd/ablations/ (no gap target)."""
    return Variant(f'aqd-w2a2-{suffix}', f'{_A}ablations/fcos_r18-c32_fpn_aqd-w2a2-{suffix}_synth.py', 'fp', 2, what,
                   target=False)


def _sensitivity(part: str, what: str) -> Variant:
    """A 4-bit FCOS with one part at 2 bits (configs/aqd/ablations/, no gap target)."""
    return Variant(f'aqd-w4a4-{part}2', f'{_A}ablations/fcos_r18-c32_fpn_aqd-w4a4-{part}2_synth.py', 'fp', 4,
                   f'AQD FCOS, 4 bits, the {what} at 2 bits (sensitivity)', target=False)


def _fqn_ablation(suffix: str, what: str) -> Variant:
    """A 4-bit FQN RetinaNet ablation of configs/fqn/ablations/ (a baseline: no gap target)."""
    config = f'configs/fqn/ablations/retinanet_r18-c32_fpn_fqn-w4a4-{suffix}_synth.py'
    return Variant(f'fqn-w4a4-{suffix}-retinanet', config, 'fp-retinanet', 4, what, target=False)


#: every stage, each FP detector before the stages that start from it
VARIANTS: List[Variant] = [
    Variant('fp', 'configs/fcos/fcos_r18-c32_fpn_bn-head_synth.py', None, None, 'FCOS, full precision'),
    Variant('aqd-w4a4', _A + 'fcos_r18-c32_fpn_aqd-w4a4_synth.py', 'fp', 4, 'AQD FCOS, 4 bits'),
    Variant('aqd-w3a3', _A + 'fcos_r18-c32_fpn_aqd-w3a3_synth.py', 'fp', 3, 'AQD FCOS, 3 bits'),
    Variant('aqd-w2a2', _A + 'fcos_r18-c32_fpn_aqd-w2a2_synth.py', 'fp', 2, 'AQD FCOS, 2 bits'),
    Variant('aqd-w4a4-f8l8', _A + 'fcos_r18-c32_fpn_aqd-w4a4-f8l8_synth.py', 'fp', 4,
            'AQD FCOS, 4 bits, first/last layers at 8 bits', deploy=True),
    Variant('aqd-w2a2-f8l8', _A + 'fcos_r18-c32_fpn_aqd-w2a2-f8l8_synth.py', 'fp', 2,
            'AQD FCOS, 2 bits, first/last layers at 8 bits', deploy=True),
    Variant('aqd-w4a4-f8l8-zl', _A + 'fcos_r18-c32_fpn_aqd-w4a4-f8l8-zl_synth.py', 'fp', 4,
            'AQD FCOS, 4 bits, first/last layers at 8 bits, grids with a zero level (for ONNX Runtime)',
            target=False, deploy=True),
    Variant('aqd-w2a2-f8l8-zl', _A + 'fcos_r18-c32_fpn_aqd-w2a2-f8l8-zl_synth.py', 'fp', 2,
            'AQD FCOS, 2 bits, first/last layers at 8 bits, grids with a zero level (for ONNX Runtime)',
            target=False, deploy=True),
    _ablation('shared-bn', 'AQD FCOS, 2 bits, one BN shared by the levels (Table 3)'),
    _ablation('backbone', 'AQD FCOS, 2 bits, backbone only quantized (Table 4)'),
    _ablation('backbone-fpn', 'AQD FCOS, 2 bits, backbone + FPN quantized (Table 4)'),
    _ablation('lsq', 'FCOS, multi-level BN, 2 bits, LSQ instead of LIQ'),
    _ablation('lsqplus', 'FCOS, multi-level BN, 2 bits, LSQ+ instead of LIQ'),
    _ablation('dorefa', 'FCOS, multi-level BN, 2 bits, DoReFa instead of LIQ'),
    _ablation('pact', 'FCOS, multi-level BN, 2 bits, PACT instead of LIQ'),
    _ablation('lqnet', 'FCOS, multi-level BN, 2 bits, LQ-Nets instead of LIQ'),
    _ablation('distill', 'AQD FCOS, 2 bits, distilled from the FP detector (features and head outputs)'),
    _ablation('add8', 'AQD FCOS, 2 bits, residual and FPN adds at 8 bits'),
    _ablation('addfp', 'AQD FCOS, 2 bits, residual and FPN adds full precision (the authors\' public code)'),
    _sensitivity('backbone', 'backbone'),
    _sensitivity('neck', 'FPN'),
    _sensitivity('head', 'head'),
    Variant('liq-w4a4', 'configs/liq/fcos_r18-c32_fpn_bn-head_liq-w4a4_synth.py', 'fp', 4,
            'FCOS fully quantized with LIQ, 4 bits, first/last layers at 8 bits, one shared head BN', target=False),
    Variant('fp-retinanet', 'configs/retinanet/retinanet_r18-c32_fpn_bn-head_synth.py', None, None,
            'RetinaNet, full precision'),
    Variant('aqd-w4a4-retinanet', _A + 'retinanet_r18-c32_fpn_aqd-w4a4_synth.py', 'fp-retinanet', 4,
            'AQD RetinaNet, 4 bits'),
    Variant('aqd-w3a3-retinanet', _A + 'retinanet_r18-c32_fpn_aqd-w3a3_synth.py', 'fp-retinanet', 3,
            'AQD RetinaNet, 3 bits'),
    Variant('aqd-w2a2-retinanet', _A + 'retinanet_r18-c32_fpn_aqd-w2a2_synth.py', 'fp-retinanet', 2,
            'AQD RetinaNet, 2 bits'),
    Variant('aqd-w4a4-f8l8-retinanet', _A + 'retinanet_r18-c32_fpn_aqd-w4a4-f8l8_synth.py', 'fp-retinanet', 4,
            'AQD RetinaNet, 4 bits, first/last layers at 8 bits', deploy=True),
    Variant('auxi-w4a4-retinanet', 'configs/auxi/retinanet_r18-c32_fpn_auxi-w4a4_synth.py', 'fp-retinanet', 4,
            'Auxi RetinaNet, 4 bits (baseline: full-precision auxiliary module, shared BN)', target=False),
    Variant('fqn-w4a4-retinanet', 'configs/fqn/retinanet_r18-c32_fpn_fqn-w4a4_synth.py', 'fp-retinanet', 4,
            'FQN RetinaNet, 4 bits (baseline: folded frozen BN, percentile calibration, fully quantized)',
            target=False),
    _fqn_ablation('f0p0c0', 'FQN RetinaNet, 4 bits, without F, P and C (FQN Table 2a row 1, Jacob et al.)'),
    _fqn_ablation('f1p0c0', 'FQN RetinaNet, 4 bits, F only: frozen folded BN (FQN Table 2a row 2)'),
    _fqn_ablation('f0p1c0', 'FQN RetinaNet, 4 bits, P only: percentile calibration (FQN Table 2a row 3)'),
    _fqn_ablation('f0p0c1', 'FQN RetinaNet, 4 bits, C only: per-channel weights (FQN Table 2a row 4)'),
    _fqn_ablation('l8', 'FQN RetinaNet, 4 bits, prediction layers (inputs, weights, outputs) at 8 bits'),
]
BY_NAME: Dict[str, Variant] = {v.name: v for v in VARIANTS}
