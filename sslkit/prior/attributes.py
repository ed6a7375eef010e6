"""``prior=attributes``: per-sample attribute vectors the dataset provides (``split.attributes``):
CUB-200's 312 and UTZappos' 126 binary attributes, Fashion-MNIST's coarse class attributes
(:data:`sslkit.data.fashion_mnist.CLASS_ATTRIBUTES`), the synthetic data's prototype attributes."""

from __future__ import annotations

from sslkit.errors import DataError
from sslkit.prior.base import PriorSource


class AttributePrior(PriorSource):
    name = "attributes"

    def compute(self, dm, data):
        attributes = getattr(data, "attributes", None)
        if attributes is None:
            raise DataError(
                f"prior=attributes: data {dm.name} carries no attributes (datasets with "
                "attributes: fashion_mnist, synthetic, cub200, utzappos); use prior=labels, "
                "features or vae"
            )
        return attributes
