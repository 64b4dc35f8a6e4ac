"""QConv2dOut: a QConv2d whose output is quantized too, ``Q_out(conv(Q_X(x), Q_W(w)))``.

For the last layers of a fully quantized detector: FQN quantizes "all activations ... from the normalized input,
to the final predictions feeding into anchor regression and non-maximum suppression" (FQN, Li et al., CVPR 2019,
section 3.4), so the outputs of the prediction convs (class logits, box deltas) are quantized as well. Every other
activation is quantized where it is consumed (the next layer's input quantizer, a QAdd); a prediction has no consumer
inside the network, hence the output quantizer.
"""
from typing import Optional

import torch
from torch import nn

from .mixin import build_role_quantizer
from .qconv import QConv2d


class QConv2dOut(QConv2d, nn.Conv2d):  # nn.Conv2d named: mmengine's init_cfg ``layer='Conv2d'`` sees direct bases
    """:class:`QConv2d` plus ``out_quantizer`` (an activation quantizer, signedness decided by the first batch)."""

    def __init__(self, *args, out_cfg: Optional[dict] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_module('out_quantizer', build_role_quantizer(out_cfg, 'act'))

    @classmethod
    def from_float(cls, conv: nn.Conv2d, weight_cfg: Optional[dict] = None, act_cfg: Optional[dict] = None,
                   out_cfg: Optional[dict] = None) -> 'QConv2dOut':
        """A QConv2dOut sharing ``conv``'s Parameters; ``out_cfg`` quantizes the output (``None``: FP)."""
        q = super().from_float(conv, weight_cfg, act_cfg)
        q.add_module('out_quantizer', build_role_quantizer(out_cfg, 'act'))
        q._move_quantizers(conv.weight.device, conv.weight.dtype)
        return q

    def _move_quantizers(self, device=None, dtype=None) -> None:
        super()._move_quantizers(device, dtype)
        q = getattr(self, 'out_quantizer', None)
        if q is not None and (device is not None or dtype is not None):
            q.to(device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, C_in, H, W)
        out = super().forward(x)  # (N, C_out, H', W')
        return out if self.out_quantizer is None else self.out_quantizer(out)
