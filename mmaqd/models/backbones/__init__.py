from .resnet import AddBasicBlock, AddBottleneck, QResNet  # noqa: F401
