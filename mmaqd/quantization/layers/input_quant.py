"""InputQuantizer: fake-quantizes the normalized input image.

For a fully quantized detector (fqn.md: all activations from the normalized input on are quantized; METHOD.md,
integer-only inference) the image itself enters the first conv as integers. The normalized image is
zero-centred, so the quantizer is signed unless its cfg says otherwise.
"""
from typing import Optional

import torch
from torch import nn

from .mixin import build_role_quantizer


class InputQuantizer(nn.Module):
    """Wraps one activation quantizer (``quantizer``; ``None`` when ``act_cfg`` is ``None`` = identity)."""

    def __init__(self, act_cfg: Optional[dict] = None):
        super().__init__()
        self.add_module('quantizer', build_role_quantizer(act_cfg, 'act', signed=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, 3, H, W) normalized image
        return x if self.quantizer is None else self.quantizer(x)  # (N, 3, H, W)
