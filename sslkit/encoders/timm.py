"""Any timm model by name as an encoder."""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslkit.errors import ConfigError


class TimmEncoder(nn.Module):
    """``timm.create_model(name, num_classes=0)``: pooled features, no classifier.

    Weights are randomly initialised unless ``pretrained`` (which needs the weights locally or
    network access to the hub). Other keywords go to the model (``img_size`` for ViTs).

    Models built for ImageNet downsample 32x; on smaller images (Fashion-MNIST's 28 px) their
    last stages get no pixels. Given ``image_size``, the encoder finds by a dry run the smallest
    input the model accepts and upsamples smaller images to it (bilinear), or refuses the model
    in one line when no input up to 8x ``image_size`` works.
    """

    def __init__(
        self,
        name: str = "resnet18",
        in_chans: int = 3,
        pretrained: bool = False,
        image_size: int | None = None,
        **kwargs,
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
        self.input_size = self._smallest_input(name, in_chans, image_size) if image_size else None

    @torch.no_grad()
    def _smallest_input(self, name: str, in_chans: int, image_size: int) -> int:
        training = self.net.training
        self.net.eval()
        error = None
        try:
            for size in [image_size] + [s for s in range(32, 8 * image_size + 1, 32) if s > image_size]:
                try:
                    self.net(torch.zeros(1, in_chans, size, size))
                    return size
                except (RuntimeError, ValueError, AssertionError) as err:
                    error = error or str(err).strip().splitlines()[0]
        finally:
            self.net.train(training)
        raise ConfigError(
            f"encoder timm '{name}' does not run on {image_size} px images ({error}); choose a "
            "model for small inputs (e.g. encoder.name=resnet18) or, for a ViT, set "
            f"+encoder.img_size={image_size}"
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.input_size is not None and x.shape[-1] < self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False)
        return self.net(x)
