"""torchvision ResNets as encoders: any input channel count, optional CIFAR stem."""

from __future__ import annotations

import torchvision
from torch import Tensor, nn

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2")


class ResNet(nn.Module):
    """A torchvision ResNet without its classifier.

    ``cifar_stem`` swaps the 7x7/stride-2 stem and max-pool for a 3x3/stride-1 conv (SimCLR's
    CIFAR variant), which small images (32x32 and below) need to keep spatial resolution.
    """

    def __init__(self, name: str = "resnet18", in_chans: int = 3, cifar_stem: bool = False) -> None:
        super().__init__()
        if name not in RESNETS:
            raise ValueError(f"unknown resnet '{name}'; choose one of {', '.join(RESNETS)}")
        net = getattr(torchvision.models, name)(weights=None)
        if cifar_stem:
            net.conv1 = nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False)
            net.maxpool = nn.Identity()
        elif in_chans != 3:
            net.conv1 = nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
        self.num_features = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
