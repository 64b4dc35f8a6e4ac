"""QConvBN / FoldedBN: a quantized conv with the BatchNorm after it folded into its weight
(FQN, Li et al., CVPR 2019, section 3.5).

FQN quantizes the BN-folded weight, with the BN statistics frozen at the EMA values of full-precision training
(section 3.5.1, Figure 3): with s = gamma / sqrt(var_EMA + eps) per output channel,

    W_fold = s * W                          (eq. 13)
    b_fold = s * (b - mu_EMA) + beta        (eq. 14)

and the layer computes ``conv(Q_X(x), Q_W(W_fold)) + b_fold``; BN is not applied separately, its running
statistics never change, and gamma, beta and W train through W_fold and b_fold.

Before freezing (``frozen=False``: the Table 2 rows without F, Jacob et al., CVPR 2018, eq. 11-12; Table 3 freezes
only for the last steps), a *training* forward folds with the batch statistics instead: the float conv
``y = conv(Q_X(x), W) + b`` gives mu_b and the biased sigma_b^2 over (N, H, W) (gradients flow through them, as
through a BN), the EMA is updated as ``nn.BatchNorm2d`` updates it (momentum, unbiased variance,
``num_batches_tracked``), and the output is ``conv(Q_X(x), Q_W(gamma / sigma_b * W)) + b_fold(mu_b, sigma_b)``.
That costs one extra float conv. The quantization whitepaper's (Krishnamoorthi, arXiv 1806.08342) correction factor
(sigma_b / sigma_EMA) is not modelled. With BN in eval mode (inference, calibration, mmdet's ``norm_eval``) both modes
fold the EMA statistics. A folded SyncBN averages the batch statistics over processes (differentiably); a plain BN uses
its own batch.

Structure, so that state_dict keys and optimizer entries do not change: the conv is replaced by a
:class:`QConvBN` sharing its Parameters; the BN, where it was, by a :class:`FoldedBN` sharing its Parameters and
buffers (a ``BatchNorm2d`` with the same keys: a full-precision checkpoint loads unchanged) whose forward is the
identity, since its conv has already applied it. The conv holds an unregistered reference to its FoldedBN; the
FoldedBN checks on every call that its input is the output of that conv, so a conv/BN pairing that does not match
the forward order (e.g. a norm before the conv) raises instead of silently dropping a BN.
"""
from typing import Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .mixin import quant_args
from .qconv import QConv2d


class FoldedBN(nn.BatchNorm2d, _BatchNorm):  # _BatchNorm named: mmengine's init_cfg ``layer`` sees direct bases
    """A BN folded into the :class:`QConvBN` before it: same parameters, buffers and keys; forward is identity.

    Build it with :meth:`from_bn`. ``synced`` / ``process_group`` remember a SyncBN's group for the batch
    statistics of an unfrozen fold; ``source_type`` is the folded BN's class name.
    """

    synced = False
    process_group = None
    source_type = 'BatchNorm2d'
    _expected_input: Optional[int] = None

    @classmethod
    def from_bn(cls, bn: _BatchNorm) -> 'FoldedBN':
        """A FoldedBN holding ``bn``'s own Parameter and buffer objects (``bn`` itself is not changed)."""
        if not isinstance(bn, _BatchNorm) or isinstance(bn, FoldedBN):
            raise TypeError(f'FoldedBN.from_bn needs an unfolded BatchNorm, got {type(bn).__name__}')
        if not bn.track_running_stats or bn.running_mean is None:
            raise ValueError(f'{type(bn).__name__} with track_running_stats=False has no EMA statistics to fold')
        f = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, True, device='meta')
        if bn.affine:
            f.weight, f.bias = bn.weight, bn.bias
        f.running_mean, f.running_var = bn.running_mean, bn.running_var
        f.num_batches_tracked = bn.num_batches_tracked
        f.synced = isinstance(bn, nn.SyncBatchNorm)
        f.process_group = getattr(bn, 'process_group', None)
        f.source_type = type(bn).__name__
        f._expected_input = None  # id() of the last output of the conv this BN is folded into
        f._load_state_dict_pre_hooks.update(bn._load_state_dict_pre_hooks)  # e.g. key mappings of the model
        return f.train(bn.training)

    def _check_input(self, x: torch.Tensor) -> None:
        if self._expected_input is None or id(x) != self._expected_input:
            raise RuntimeError('FoldedBN: called on a tensor that is not the output of the conv it is folded into; '
                               'the conv/BN pairing does not follow the forward order (e.g. a norm before its '
                               'conv, or something between them). Fix the fold_bn rules of the QuantConfig.')
        self._expected_input = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, C, H, W), already normalized by the conv
        self._check_input(x)
        return x

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, folded from {self.source_type}'


def batch_moments(y: torch.Tensor, synced: bool = False, group=None) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """Per-channel mean and biased variance of ``y`` (N, C, H, W) over (N, H, W), and the element count.

    ``synced``: summed over the processes of ``group`` (differentiable all-reduce), as SyncBN does.
    """
    c = y.shape[1]
    if synced and dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1:
        from torch.distributed.nn.functional import all_reduce
        rows = y.transpose(0, 1).reshape(c, -1)  # (C, N*H*W)
        local = torch.cat([rows.sum(1), (rows * rows).sum(1), rows.new_full((1,), rows.shape[1])])  # (2C + 1,)
        total = all_reduce(local, group=group)
        n = total[-1]
        mean = total[:c] / n
        return mean, (total[c:2 * c] / n - mean * mean).clamp_min(0), int(n.item())
    var, mean = torch.var_mean(y, dim=(0, 2, 3), correction=0)  # (C,), (C,)
    return mean, var, y.numel() // c


class QConvBN(QConv2d, nn.Conv2d):  # nn.Conv2d named: mmengine's init_cfg ``layer='Conv2d'`` sees direct bases
    """A :class:`QConv2d` computing conv + the BN after it, with the weight quantizer seeing W_fold (eq. 13-14).

    Build it with :meth:`from_float`; the returned layer's :attr:`bn` (a :class:`FoldedBN`) must take the BN's
    place in the model (:func:`mmaqd.quantization.quantize_model` does both).

    Attributes:
        frozen: ``True``: fold the EMA statistics and never update them (FQN, eq. 13-14). ``False``: a training
            forward (BN in train mode) folds the batch statistics and updates the EMA (eq. 11-12). Not saved in
            checkpoints (like a quantizer's ``enabled``); :class:`mmaqd.engine.hooks.FreezeBNHook` switches it.
    """

    supports_output_quant = False  # the FoldedBN after it checks that it sees this conv's own output

    def __init__(self, *args, frozen: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.frozen = bool(frozen)
        self.__dict__['_folded_bn'] = None  # not a registered child: the BN keeps its own place and keys

    @classmethod
    def from_float(cls, conv: nn.Conv2d, bn: _BatchNorm, weight_quant: Optional[dict] = None,
                   input_quant: Optional[dict] = None, frozen: bool = True, *, weight_cfg: Optional[dict] = None,
                   act_cfg: Optional[dict] = None) -> 'QConvBN':
        """A QConvBN sharing ``conv``'s Parameters, folded with a new FoldedBN sharing ``bn``'s state
        (``weight_cfg`` / ``act_cfg``: deprecated names of ``weight_quant`` / ``input_quant``)."""
        if not isinstance(bn, _BatchNorm):
            raise TypeError(f'QConvBN.from_float needs a BatchNorm to fold, got {type(bn).__name__}')
        if bn.num_features != conv.out_channels:
            raise ValueError(f'cannot fold a {type(bn).__name__} of {bn.num_features} channels into a conv with '
                             f'{conv.out_channels} output channels')
        weight_quant, input_quant = quant_args(weight_quant, input_quant, weight_cfg, act_cfg, 'QConvBN.from_float')
        folded = FoldedBN.from_bn(bn)
        q = super().from_float(conv, weight_quant, input_quant)
        q.frozen = bool(frozen)
        q.__dict__['_folded_bn'] = folded
        return q

    @property
    def bn(self) -> FoldedBN:
        """The FoldedBN whose gamma, beta and statistics this conv applies."""
        return self.__dict__['_folded_bn']

    def folded_weight_bias(self, mean: torch.Tensor, var: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """W_fold (C_out, C_in/g, kh, kw) and b_fold (C_out,) for statistics ``mean``, ``var`` (eq. 11-14)."""
        bn = self.bn
        gamma = bn.weight if bn.affine else torch.ones_like(var)
        beta = bn.bias if bn.affine else torch.zeros_like(mean)
        scale = gamma / torch.sqrt(var + bn.eps)  # (C_out,)
        bias = self.bias if self.bias is not None else torch.zeros_like(mean)
        return self.weight * scale.view(-1, 1, 1, 1), beta + (bias - mean) * scale

    def _batch_statistics(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """mu_b, sigma_b^2 of the float conv output on ``x`` (eq. 11-12); updates the BN's EMA in place."""
        bn = self.bn
        mean, var, n = batch_moments(self._conv_forward(x, self.weight, self.bias), bn.synced, bn.process_group)
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            bn.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            bn.running_var.mul_(1 - m).add_(var.detach() * (n / max(n - 1, 1)), alpha=m)
        return mean, var

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, C_in, H, W)
        bn = self.bn
        if bn is None:
            raise RuntimeError('QConvBN has no folded BN; build it with QConvBN.from_float(conv, bn, ...)')
        x = self.quantized_input(x)
        if self.frozen or not bn.training:
            mean, var = bn.running_mean, bn.running_var  # EMA statistics (eq. 13-14)
        else:
            mean, var = self._batch_statistics(x)  # batch statistics (eq. 11-12)
        w, b = self.folded_weight_bias(mean, var)
        w = w if self.weight_quantizer is None else self.weight_quantizer(w)
        out = self._conv_forward(x, w, b)  # (N, C_out, H', W')
        bn._expected_input = id(out)
        return out

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, bn_frozen={self.frozen}'


def folded_convs(model: nn.Module):
    """Yield ``(name, layer)`` for every :class:`QConvBN` of ``model``."""
    for name, m in model.named_modules():
        if isinstance(m, QConvBN):
            yield name, m


def set_bn_frozen(model: nn.Module, frozen: bool) -> int:
    """Freeze (or unfreeze) the BN statistics of every folded conv of ``model``; returns how many were set."""
    n = 0
    for _, m in folded_convs(model):
        m.frozen = bool(frozen)
        n += 1
    return n
