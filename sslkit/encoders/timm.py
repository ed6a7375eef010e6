"""Any timm model by name as an encoder."""

from __future__ import annotations

import timm
from torch import Tensor, nn


class TimmEncoder(nn.Module):
    """``timm.create_model(name, num_classes=0)``: pooled features, no classifier.

    Weights are randomly initialised unless ``pretrained`` (which needs the weights locally or
    network access to the hub). ``img_size`` is forwarded to models that take it (ViTs).
    """

    def __init__(
        self, name: str = "resnet18", in_chans: int = 3, pretrained: bool = False, **kwargs
    ) -> None:
        super().__init__()
        if not timm.is_model(name):
            close = timm.list_models(f"*{name}*")[:10]
            hint = f"; similar names: {', '.join(close)}" if close else ""
            raise ValueError(f"timm has no model named '{name}'{hint} (see timm.list_models())")
        self.net = timm.create_model(
            name, pretrained=pretrained, num_classes=0, in_chans=in_chans, **kwargs
        )
        self.num_features = self.net.num_features

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
