"""``prior=labels``: one-hot class labels, the weakly supervised upper bound of a prior."""

from __future__ import annotations

import torch.nn.functional as F

from sslkit.errors import DataError
from sslkit.prior.base import PriorSource


class LabelPrior(PriorSource):
    name = "labels"

    def compute(self, dm, data):
        labels = data.labels
        if bool((labels < 0).any()):
            raise DataError(
                f"prior=labels: the {dm.name} training split has unlabelled samples; pick "
                "another prior (attributes, features, vae)"
            )
        return F.one_hot(labels, max(dm.num_classes, int(labels.max()) + 1))
