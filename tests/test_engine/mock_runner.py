"""A mock runner and data loaders shared by the hook tests (mmdet's checkloss-hook test style)."""
from types import SimpleNamespace
from unittest.mock import MagicMock


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
