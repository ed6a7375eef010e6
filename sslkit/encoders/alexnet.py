"""SmallAlexNet: the encoder of Wang & Isola (2020) and of CACR's CIFAR/STL-10 experiments."""

from __future__ import annotations

from torch import Tensor, nn


def _conv(cin: int, cout: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    ]
    if pool:
        layers.append(nn.MaxPool2d(3, 2))
    return nn.Sequential(*layers)


def _fc(din: int, dout: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(din, dout, bias=False), nn.BatchNorm1d(dout), nn.ReLU(inplace=True))


class SmallAlexNet(nn.Module):
    """Five 3x3 conv-BN-ReLU blocks (96, 192, 384, 384, 192 channels; 3x3/2 max-pools after the
    1st, 2nd and 5th) and two 4096-unit fully connected BN-ReLU layers (fc6, fc7).

    ``num_features`` = 4096: the fc7 output, which CACR's and Wang & Isola's linear evaluation
    reads; their last layer (fc8, a linear map to 128 followed by L2 normalisation) is the
    projector here (``model.projector.layers=1``, the loss heads normalise). fc6's input size
    follows from ``image_size`` (32 -> 192*3*3, 64 -> 192*7*7 as in the official files).
    Weights are drawn from N(0, ``init_std``) as in the official ``init_weights_``.
    """

    def __init__(self, in_chans: int = 3, image_size: int = 32, init_std: float = 0.02) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            _conv(in_chans, 96, True), _conv(96, 192, True), _conv(192, 384, False),
            _conv(384, 384, False), _conv(384, 192, True),
        )
        side = image_size
        for _ in range(3):
            side = (side - 3) // 2 + 1
        if side < 1:
            raise ValueError(f"SmallAlexNet needs images of at least 15 px, got image_size={image_size}")
        self.fc = nn.Sequential(nn.Flatten(), _fc(192 * side * side, 4096), _fc(4096, 4096))
        self.num_features = 4096
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.normal_(m.weight, 0.0, init_std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.convs(x))
