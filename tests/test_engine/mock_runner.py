"""A mock runner, data loaders and a two-conv quantized network shared by the hook tests (mmdet's checkloss-hook
test style)."""
from types import SimpleNamespace
from unittest.mock import MagicMock

import torch
from mmengine.model import BaseModel
from torch import nn

from mmaqd.quantization import QConv2d


class CountingLoader:
    """A list of batches that counts how many were taken."""

    def __init__(self, batches):
        self.batches, self.taken = batches, 0

    def __iter__(self):
        for b in self.batches:
            self.taken += 1
            yield b


class NoDataLoader:
    def __iter__(self):
        raise AssertionError('the hook must not read data here')


def make_runner(model, loader):
    """A mock runner with an epoch-style train loop (no ``dataloader_iterator``): batches come from the loader."""
    runner = MagicMock()
    runner.model, runner.train_dataloader, runner.train_loop = model, loader, SimpleNamespace()
    return runner


class TwoQConvNet(BaseModel):
    """conv1 -> BN -> ReLU -> conv2 (3 -> 4 -> 4 channels), both convs quantized with ``weight`` / ``act``; the
    forward returns conv2's output (N, 4, H, W). The tests' networks add their own third conv."""

    def __init__(self, weight: dict, act: dict):
        super().__init__(data_preprocessor=dict(type='BaseDataPreprocessor'))
        self.conv1 = QConv2d.from_float(nn.Conv2d(3, 4, 3, padding=1), weight, act)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = QConv2d.from_float(nn.Conv2d(4, 4, 3, padding=1), weight, act)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        return self.conv2(torch.relu(self.bn(self.conv1(inputs))))
