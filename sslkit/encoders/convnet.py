"""A small VGG-style convnet: the default encoder for 28x28 / 32x32 images on a CPU."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class ConvNet(nn.Module):
    """Stages of ``depth`` 3x3 conv-BN-ReLU blocks, 2x2 max-pool between stages, global average
    pool at the end, to ``pool_size`` x ``pool_size`` cells (1 = global average pooling; 2 keeps
    a coarse layout, which linear probes of small images profit from). ``num_features`` is
    ``widths[-1] * pool_size**2``."""

    def __init__(
                self,
        in_chans: int = 1,
        widths: Sequence[int] = (32, 64, 128, 256),
        depth: int = 1,
        pool_size: int = 1,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_chans
        for i, width in enumerate(widths):
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            for _ in range(depth):
                layers += _conv_bn_relu(cin, width)
                cin = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.num_features = cin * pool_size * pool_size

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.features(x)).flatten(1)
