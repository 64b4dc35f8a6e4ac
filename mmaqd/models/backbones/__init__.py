from .resnet import AddBasicBlock, AddBottleneck, AddModuleResNet, QResNet  # noqa: F401
