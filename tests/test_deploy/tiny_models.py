"""Small quantized detectors with non-trivial BN statistics and initialised quantizers, for the deploy tests."""
import os.path as osp

import torch
from mmengine.config import Config

from conftest import ROOT, build_cpu_model

FCOS_F8L8 = 'configs/aqd/fcos_r18-c32_fpn_aqd-w4a4-f8l8_synth.py'
RETINA_F8L8 = 'configs/aqd/retinanet_r18-c32_fpn_aqd-w4a4-f8l8_synth.py'
FCOS_F8L8_ZL = 'configs/aqd/fcos_r18-c32_fpn_aqd-w4a4-f8l8-zl_synth.py'
FCOS_FP_ENDS = 'configs/aqd/fcos_r18-c32_fpn_aqd-w4a4_synth.py'


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BN (each level of a multi-level BN its own) random statistics and affine parameters."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(c, generator=g) * 0.4 - 0.2)


def tiny_quantized(config: str, bits: int = None, cfg_options: dict = None, init: bool = True, seed: int = 0):
    """``(model, x)``: the config's model on the CPU in eval mode, random BN, quantizers initialised on ``x``."""
    cfg = Config.fromfile(osp.join(ROOT, config))
    if bits is not None:
        cfg.merge_from_dict({'model.quant_cfg.weight_quant.bits': bits, 'model.quant_cfg.input_quant.bits': bits})
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    torch.manual_seed(seed)
    with torch.no_grad():
        model = build_cpu_model(cfg).eval()
        randomize_bn(model, seed)
        x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(seed))
        if init:
            model(x, mode='tensor')
    return model, x
