"""Knowledge distillation from the full-precision detector: the quantized student is fine-tuned with extra losses
that pull it towards a frozen full-precision teacher (``distill_cfg`` of :class:`QFCOS` / :class:`QRetinaNet`).

Beyond the AQD paper (arXiv 2007.06919v1), which trains its quantized detectors on the detection losses alone; its
Auxi baseline (Table 2; :mod:`mmaqd.models.detectors.auxi`) is a related idea, a full-precision auxiliary module
trained together with the quantized one, where here the full-precision detector is the trained one the student
was initialised from and stays frozen. Three losses are added, each a key of the loss dict (so mmengine logs them
and sums them into the total):

* ``loss_distill_feat``: feature imitation (FitNets, Romero et al., arXiv 1412.6550): ``feature_weight`` x the mean
  over the FPN levels of the MSE between the student's and the teacher's level;
* ``loss_distill_cls``: soft targets (Hinton et al., arXiv 1503.02531) for sigmoid classifiers: ``head_weight`` x
  ``T^2`` x the mean over levels of the binary cross entropy of ``sigmoid(student / T)`` against
  ``sigmoid(teacher / T)``, less the teacher's own entropy (a constant: the same gradients, and the loss is the
  Bernoulli KL divergence, zero when the student matches). FCOS's centerness logits, trained with a sigmoid BCE
  like the classes, get the same term (a second per-level mean, added);
* ``loss_distill_reg``: ``head_weight`` x the mean over levels of the MSE of the box-regression outputs (FCOS: the
  stride-normalised distances, RetinaNet: the anchor deltas).

The head outputs are matched by position: index 0 class logits, 1 box regression, 2 centerness when present (FCOS
gives ``(cls_scores, bbox_preds, centernesses)``, RetinaNet ``(cls_scores, bbox_preds)``). Teacher and student must
have the same FPN levels, head outputs and shapes (the same architecture: the student's float model).

The teacher is built on the first :meth:`FPDistiller.loss` call, from the ``model`` of ``teacher_config``, loaded
strictly from ``teacher_checkpoint``, in eval mode and without gradients. The :class:`FPDistiller` holding it is a
plain object, not an ``nn.Module``, so the teacher is no submodule of the student: it is not in the student's
``state_dict()``, ``parameters()`` or ``named_modules()`` (checkpoints, the optimizer and the integer converter
never see it) and ``student.train()`` leaves it in eval mode. ``predict`` / ``tools/test.py`` / deployment never
build it and need neither file. Relative paths are relative to the working directory (as ``load_from``).
"""
import math
import numbers
import os.path as osp
from contextlib import contextmanager
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import DefaultScope
from torch import Tensor, nn

from mmaqd.quantization import reuse_quantized_weights

#: the keys of ``distill_cfg`` and their defaults (``None``: required)
DISTILL_DEFAULTS = dict(teacher_config=None, teacher_checkpoint=None, feature_weight=1.0, head_weight=1.0,
                        temperature=1.0)
#: the loss-dict keys the distillation adds
DISTILL_LOSS_KEYS = ('loss_distill_feat', 'loss_distill_cls', 'loss_distill_reg')


# ------------------------------------------------------------------------------------------------ losses
def feature_imitation_loss(student: Sequence[Tensor], teacher: Sequence[Tensor]) -> Tensor:
    """Mean over levels of the MSE between ``student[l]`` and ``teacher[l]`` (each (N, C, H_l, W_l))."""
    return torch.stack([F.mse_loss(s, t) for s, t in zip(student, teacher)]).mean()  # () float


def soft_target_loss(student: Sequence[Tensor], teacher: Sequence[Tensor], temperature: float) -> Tensor:
    """``T^2`` x mean over levels of the Bernoulli KL divergence between ``sigmoid(teacher / T)`` and
    ``sigmoid(student / T)``, per logit (each level (N, K, H_l, W_l)): the BCE against the teacher's soft targets
    less the teacher's entropy."""
    terms = []
    for s, t in zip(student, teacher):
        target = torch.sigmoid(t / temperature)  # (N, K, H_l, W_l) in (0, 1)
        bce = F.binary_cross_entropy_with_logits(s / temperature, target)  # () float
        entropy = F.binary_cross_entropy_with_logits(t / temperature, target)  # () float, constant
        terms.append(bce - entropy)
    return torch.stack(terms).mean() * temperature ** 2  # () float


# ------------------------------------------------------------------------------------------------ config
def _check_cfg(distill_cfg: dict) -> dict:
    """``distill_cfg`` with its defaults filled in; ``ValueError`` naming a bad key or value."""
    if not isinstance(distill_cfg, dict):
        raise ValueError(f'distill_cfg must be a dict with keys {list(DISTILL_DEFAULTS)}, got {distill_cfg!r}')
    unknown = sorted(set(distill_cfg) - set(DISTILL_DEFAULTS))
    if unknown:
        raise ValueError(f'distill_cfg: unknown key(s) {unknown}; allowed: {list(DISTILL_DEFAULTS)}')
    cfg = dict(DISTILL_DEFAULTS, **distill_cfg)
    for key in ('teacher_config', 'teacher_checkpoint'):
        if not isinstance(cfg[key], str) or not cfg[key]:
            raise ValueError(f'distill_cfg.{key} must be a file path (str), got {cfg[key]!r}')
    for key, low in (('feature_weight', '>= 0'), ('head_weight', '>= 0'), ('temperature', '> 0')):
        value = cfg[key]
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or value < 0 or (low == '> 0' and value == 0):
            raise ValueError(f'distill_cfg.{key}={value!r} is invalid; allowed: a finite number {low}')
    return cfg


def _read_state_dict(path: str) -> Dict[str, Tensor]:
    """The state dict of the checkpoint at ``path`` (under ``"state_dict"``, as mmengine saves, or bare), read
    with ``weights_only=True``; ``ValueError`` naming the file if it holds none."""
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # noqa: BLE001  (torch's loaders raise many types)
        raise ValueError(f'distill_cfg.teacher_checkpoint = {path} is not a readable PyTorch checkpoint '
                         f'({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ""})') from e
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f'distill_cfg.teacher_checkpoint = {path} holds no state dict of tensors (a dict with '
                         f'"state_dict", as mmengine saves it, or a bare state dict); found {type(ckpt).__name__}')
    return state


@contextmanager
def _own_training_flag(module: nn.Module, training: bool):
    """Set ``module.training`` alone (not its children's) within the block."""
    old = module.training
    module.training = training
    try:
        yield
    finally:
        module.training = old


def _normalization(model: nn.Module) -> Optional[tuple]:
    """What the model's data preprocessor does to the pixels: (bgr_to_rgb, mean, std), ``None`` without one."""
    pre = getattr(model, 'data_preprocessor', None)
    if pre is None:
        return None
    normalize = getattr(pre, '_enable_normalize', False)
    return (getattr(pre, '_channel_conversion', False), pre.mean.flatten().tolist() if normalize else None,
            pre.std.flatten().tolist() if normalize else None)


# ------------------------------------------------------------------------------------------------ distiller
class FPDistiller:
    """The frozen full-precision teacher and the distillation losses (see the module docstring).

    Args:
        teacher_config: mmengine config file whose ``model`` is the full-precision detector.
        teacher_checkpoint: its weights (a ``.pth`` with ``state_dict``, as mmengine saves, or a bare state dict).
        feature_weight: factor of ``loss_distill_feat`` (>= 0).
        head_weight: factor of ``loss_distill_cls`` and ``loss_distill_reg`` (>= 0).
        temperature: ``T`` of the soft targets (> 0).
    """

    def __init__(self, teacher_config: str, teacher_checkpoint: str, feature_weight: float = 1.0,
                 head_weight: float = 1.0, temperature: float = 1.0):
        cfg = _check_cfg(dict(teacher_config=teacher_config, teacher_checkpoint=teacher_checkpoint,
                              feature_weight=feature_weight, head_weight=head_weight, temperature=temperature))
        self.teacher_config = cfg['teacher_config']
        self.teacher_checkpoint = cfg['teacher_checkpoint']
        self.feature_weight = float(cfg['feature_weight'])
        self.head_weight = float(cfg['head_weight'])
        self.temperature = float(cfg['temperature'])
        self.teacher: Optional[nn.Module] = None  # built by the first loss()

    @classmethod
    def from_cfg(cls, distill_cfg: dict) -> 'FPDistiller':
        """From a ``distill_cfg`` dict; ``ValueError`` naming an unknown key or a bad value."""
        return cls(**_check_cfg(distill_cfg))

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(teacher_config={self.teacher_config!r}, teacher_checkpoint='
                f'{self.teacher_checkpoint!r}, feature_weight={self.feature_weight}, head_weight={self.head_weight}, '
                f'temperature={self.temperature}, built={self.teacher is not None})')

    # -------------------------------------------------------------------------------------------- teacher
    def build_teacher(self, student: nn.Module) -> nn.Module:
        """The teacher: built from ``teacher_config``'s ``model``, loaded strictly from ``teacher_checkpoint``,
        frozen, in eval mode, on the device of ``student``'s parameters."""
        for key in ('teacher_config', 'teacher_checkpoint'):
            path = getattr(self, key)
            if not osp.isfile(path):
                raise FileNotFoundError(f'distill_cfg.{key} = {path}: no such file (relative paths are relative to '
                                        f'the working directory, {osp.abspath(".")})')
        cfg = Config.fromfile(self.teacher_config)  # imports its custom_imports
        if 'model' not in cfg:
            raise ValueError(f'distill_cfg.teacher_config = {self.teacher_config} has no `model`')
        from mmdet.registry import MODELS
        with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmdet')):
            teacher = revert_sync_batchnorm(MODELS.build(cfg.model))  # no init_weights: the checkpoint sets all

        state = _read_state_dict(self.teacher_checkpoint)
        result = teacher.load_state_dict(state, strict=False)  # strict by hand below, to name the files
        if result.missing_keys or result.unexpected_keys:
            raise RuntimeError(
                f'distill_cfg.teacher_checkpoint = {self.teacher_checkpoint} does not match the teacher '
                f'{type(teacher).__name__} of {self.teacher_config}: missing keys {result.missing_keys}, '
                f'unexpected keys {result.unexpected_keys}')
        if _normalization(teacher) != _normalization(student):
            raise ValueError(f'distill_cfg.teacher_config = {self.teacher_config}: the teacher normalises its inputs '
                             f'differently (bgr_to_rgb, mean, std: {_normalization(teacher)}) from the student '
                             f'({_normalization(student)}); it is fed the student\'s preprocessed batch')
        teacher.eval().requires_grad_(False)
        device = next(student.parameters()).device
        return teacher.to(device)

    def teacher_outputs(self, student: nn.Module, batch_inputs: Tensor):
        """``(feats, head_outs)`` of the teacher on ``batch_inputs`` (N, 3, H, W), without gradients. The
        teacher head's own ``training`` flag follows the student head's (its norms stay in eval mode): output
        scaling that depends on it (FCOS ``norm_on_bbox`` multiplies the distances by the stride at test time)
        then matches the student's."""
        if self.teacher is None:
            self.teacher = self.build_teacher(student)
        teacher = self.teacher
        if next(teacher.parameters()).device != batch_inputs.device:
            teacher.to(batch_inputs.device)
        with torch.no_grad(), reuse_quantized_weights(teacher), \
                _own_training_flag(teacher.bbox_head, student.bbox_head.training):
            feats = teacher.extract_feat(batch_inputs)  # tuple of L (N, C, H_l, W_l)
            outs = teacher.bbox_head(feats)  # tuple of 2 or 3 lists of L (N, *, H_l, W_l)
        return feats, outs

    # -------------------------------------------------------------------------------------------- losses
    def loss(self, student: nn.Module, batch_inputs: Tensor, feats: Sequence[Tensor],
             outs: Sequence[Sequence[Tensor]]) -> Dict[str, Tensor]:
        """The distillation losses of ``student`` given its FPN features ``feats`` (L of (N, C, H_l, W_l)) and
        head outputs ``outs`` (2 or 3 lists of L (N, *, H_l, W_l)) on ``batch_inputs``."""
        t_feats, t_outs = self.teacher_outputs(student, batch_inputs)
        self._check_match('FPN levels', feats, t_feats)
        if len(outs) != len(t_outs):
            raise ValueError(f'distillation: the student head gives {len(outs)} outputs, the teacher head '
                             f'{len(t_outs)}; teacher and student must be the same detector')
        for i, (s, t) in enumerate(zip(outs, t_outs)):
            self._check_match(f'head output {i}', s, t)
        soft = soft_target_loss(outs[0], t_outs[0], self.temperature)
        if len(outs) > 2:  # FCOS centerness logits: soft targets too
            soft = soft + soft_target_loss(outs[2], t_outs[2], self.temperature)
        return dict(loss_distill_feat=self.feature_weight * feature_imitation_loss(feats, t_feats),
                    loss_distill_cls=self.head_weight * soft,
                    loss_distill_reg=self.head_weight * feature_imitation_loss(outs[1], t_outs[1]))

    @staticmethod
    def _check_match(what: str, student: Sequence[Tensor], teacher: Sequence[Tensor]) -> None:
        shapes = [tuple(t.shape) for t in student], [tuple(t.shape) for t in teacher]
        if shapes[0] != shapes[1]:
            raise ValueError(f'distillation: the student\'s {what} have shapes {shapes[0]}, the teacher\'s '
                             f'{shapes[1]}; teacher and student must be the same detector')
