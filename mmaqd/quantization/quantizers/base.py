"""The contract every quantizer in mmaqd follows.

A quantizer is an ``nn.Module`` that maps a float tensor to its fake-quantized (quantized, then de-quantized)
float tensor of the same shape and dtype. The notation of AQD (arXiv 2007.06919v1, eq. 1): a transformer T maps the
value into the quantizer's normalized range, a discretizer D rounds it; ``forward`` returns the value brought back to
the original scale, so that a quantized layer computes ``conv(Q_X(x), Q_W(w))``.

State that a checkpoint must carry (learned ranges, step sizes, offsets, bases, calibration results, and
whether data-driven initialisation has happened) is held in parameters or persistent buffers, so
``state_dict`` / ``load_state_dict`` and mmengine's resume carry it.

For the training hooks each quantizer also names the tensors that set its range (``range_names``; those that must
stay > 0 in ``positive_names``: :class:`~mmaqd.engine.hooks.DivergenceGuardHook` checks them) and says which
input values it clips (:meth:`BaseQuantizer.clip_bounds`; :class:`~mmaqd.engine.hooks.QuantizerHealthHook` logs
their share).
"""
import warnings
from typing import Optional, Tuple

import torch
from torch import nn

from ...ops.checks import MAX_BITS, MIN_BITS, broadcast_dim0, check_bits
from .utils import resolve_role, sync_any

__all__ = ['BaseQuantizer', 'MIN_BITS', 'MAX_BITS', 'check_bits']

_TRACED_UNINITIALISED = (
    'a data-init quantizer was traced (torch.jit) before it was initialised: the trace leaves it uninitialised and '
    'quantizes with its initial range (the graph, and so a FLOP count, is the same; the values are not). Run a '
    'batch through the model eagerly first (tools/analysis/get_flops.py does) or load a quantized checkpoint.')


class BaseQuantizer(nn.Module):
    """Base class: bit width, signedness, granularity, the on/off switch and once-only data init.

    Args:
        bits: bit width k, 2 to 8.
        signed: ``True`` for a range symmetric around 0 (weights; activations that can be negative),
            ``False`` for a range starting at 0 (activations after ReLU). ``None`` lets the first batch
            decide (signed if it holds a negative value, on any distributed rank); the decision is saved in the
            state_dict.
        per_channel: one range per slice along dim 0 (output channels of a weight) instead of one per tensor.
        num_channels: size of dim 0, required when ``per_channel`` is set (parameters are allocated at
            construction so that checkpoints load before any forward).
        role: what is quantized, ``'weight'`` (always signed, eq. 3) or ``'act'`` (an activation, eq. 4);
            ``None`` infers ``'weight'`` when ``per_channel`` is set (dim 0 of an activation is the batch), else
            ``'act'``. Quantized layers always pass their role.
        mode: deprecated name of ``role``.

    Subclasses implement :meth:`quantize` (the fake-quant forward on an enabled, initialised quantizer) and,
    where the method initialises from data, :meth:`init_from` (called once, on the first batch seen in
    training or evaluation, under ``torch.no_grad``; never inside a ``torch.jit`` trace).
    """

    supports_per_channel = True   # subclasses that cannot be per-channel set False
    data_init = False             # subclasses whose ranges are initialised from data set True
    #: attributes holding the learned or calibrated range (e.g. LIQ's ``alpha``); a ``None`` one is skipped
    range_names: Tuple[str, ...] = ()
    #: those of ``range_names`` that are an interval or step length, so must stay finite and > 0
    positive_names: Tuple[str, ...] = ()

    def __init__(self, bits: int, signed: Optional[bool] = False, per_channel: bool = False,
                 num_channels: Optional[int] = None, role: Optional[str] = None, *, mode: Optional[str] = None):
        super().__init__()
        self.bits = check_bits(bits)
        self.role = resolve_role(role, per_channel, mode=mode, where=type(self).__name__)
        signed = True if self.role == 'weight' else signed
        if per_channel and not self.supports_per_channel:
            raise ValueError(f'{type(self).__name__} does not support per_channel=True; use per_channel=False')
        if per_channel and (num_channels is None or num_channels < 1):
            raise ValueError(f'per_channel=True needs num_channels >= 1, got num_channels={num_channels!r}')
        self.per_channel = per_channel
        self.num_channels = num_channels if per_channel else None
        self.enabled = True
        self.register_buffer('initialized', torch.tensor(False))
        self.register_buffer('signed_flag', torch.tensor(-1 if signed is None else int(bool(signed))))

    # ----------------------------------------------------------------------------------------- state
    @property
    def signed(self) -> Optional[bool]:
        """The range's signedness; ``None`` while it is still to be decided by the first batch."""
        flag = int(self.signed_flag)
        return None if flag < 0 else bool(flag)

    @property
    def param_shape(self) -> tuple:
        """Shape of a per-tensor (``()``) or per-channel (``(C,)``) range parameter."""
        return (self.num_channels,) if self.per_channel else ()

    @property
    def mode(self) -> str:
        """Deprecated name of :attr:`role`."""
        warnings.warn(f"{type(self).__name__}.mode is deprecated, use 'role' (same meaning)", FutureWarning,
                      stacklevel=2)
        return self.role

    def broadcast(self, p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """A range parameter ``p``, () or (C,), shaped to broadcast along dim 0 of ``x``
        (:func:`mmaqd.ops.broadcast_dim0`)."""
        return broadcast_dim0(p, x)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        """A checkpoint that has none of this quantizer's state (a full-precision one) is not a mismatch.

        The quantizer then keeps its fresh state (``initialized`` false, so data-driven ranges are set from the
        first batch) and its keys are not reported missing. A checkpoint holding only part of the state is a
        real mismatch and is reported as usual.
        """
        own = [prefix + name for name, value in list(self._parameters.items()) + list(self._buffers.items())
               if value is not None and name not in self._non_persistent_buffers_set]
        absent = not any(key in state_dict for key in own)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if absent:
            for key in own:
                if key in missing_keys:
                    missing_keys.remove(key)

    # ----------------------------------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        if self.signed is None:
            with torch.no_grad():
                self.signed_flag.fill_(int(sync_any(bool((x < 0).any()), x.device)))  # same on every rank
        if self.data_init and not bool(self.initialized):
            if torch.jit.is_tracing():  # a trace (FLOP counters, jit export) must not set ranges from its input
                warnings.warn(_TRACED_UNINITIALISED, stacklevel=2)
            else:
                with torch.no_grad():
                    self.init_from(x.detach())
                self.initialized.fill_(True)
        return self.quantize(x)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def init_from(self, x: torch.Tensor) -> None:
        """Initialise data-driven ranges from the first batch ``x``; only called when ``data_init``."""
        raise NotImplementedError

    def clip_bounds(self, x: torch.Tensor) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """``(lo, hi)``, each broadcastable against ``x`` and on its scale: the input values outside [lo, hi] are
        clipped to the end of the range. ``None`` for a quantizer that never clips (the default; e.g. a range
        from the tensor's own min / max). Valid after a forward of ``x`` (signedness and range set)."""
        return None

    def extra_repr(self) -> str:
        signed = {None: 'auto', True: 'signed', False: 'unsigned'}[self.signed]
        gran = f'per_channel({self.num_channels})' if self.per_channel else 'per_tensor'
        return f'{self.role}, bits={self.bits}, {signed}, {gran}, enabled={self.enabled}'
