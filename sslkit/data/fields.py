"""Per-sample batch fields beyond ``image``/``label``/``index``, and the check that a loss head's
inputs are provided before any work.

A head lists the inputs it needs in ``requires``; the module passes each one from the batch
field of the same name, except the two per-sample fields named in the singular in a batch
(``label`` -> ``labels``, ``domain`` -> ``domains``) and the inputs a module part makes
(``k``, ``queue``). So a new head input is a new batch field and a name in ``requires``.

A split holds its extra fields in ``split.fields`` (``{name: Tensor[N, ...]}`` in the split's
order). A reader may instead set ``split.domains`` (``LongTensor[N]``), which becomes the
``domain`` field; ``split.attributes`` (``FloatTensor[N, P]``) is read by ``prior=attributes``.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from sslkit.errors import ConfigError, DataError

# inputs made by module parts (momentum encoder, key queue), not read from the batch
MODULE_PARTS = frozenset({"k", "queue"})
# head input name -> batch field name, where they differ
BATCH_FIELDS = {"labels": "label", "domains": "domain"}
# how to get a missing field
FIXES = {
    "prior": "add prior=labels (or prior=attributes|features|vae, see docs/priors.md)",
    "domain": "add data.domain_shift=[plain,invert] (a synthetic shift of in-memory datasets) "
              "or use a dataset with domains (data=domainfolder), or set loss.alpha=0 loss.beta=0",
    "label": "use a labelled pretraining split",
}


def batch_field(name: str) -> str:
    """The batch field that provides head input ``name``."""
    return BATCH_FIELDS.get(name, name)


def origin(data: Dataset) -> torch.Tensor:
    """For each position of ``data``, the sample's index in the stored split."""
    index = getattr(data, "origin", None)
    return index if index is not None else torch.arange(len(data))


def promote_fields(data: Dataset) -> Dataset:
    """Expose a reader's ``domains`` attribute as the ``domain`` batch field."""
    if not hasattr(data, "fields"):
        data.fields = {}
    domains = getattr(data, "domains", None)
    if domains is not None and "domain" not in data.fields:
        data.fields["domain"] = torch.as_tensor(domains).long()
    return data


def attach(data: Dataset, name: str, values: torch.Tensor) -> None:
    """Give every sample of ``data`` its row of ``values`` (rows in the stored split's order,
    looked up by each sample's original index: stable under long-tailed subsets and sharding)."""
    idx = origin(data)
    if len(values) <= int(idx.max()):
        raise DataError(f"{name}: {len(values)} rows, but the split has sample {int(idx.max())}")
    data.fields[name] = values[idx]


def check_head_inputs(head, dm) -> None:
    """Refuse, in one line, a head input that no batch of the pretraining split carries."""
    requires = set(getattr(head, "requires", ())) - MODULE_PARTS
    if not requires:
        return
    data = dm.split("pretrain")
    provided = set(data[0])
    for name in sorted(requires):
        field = batch_field(name)
        where = f"loss {type(head).__name__} needs `{name}` in every batch"
        if field not in provided:
            fix = FIXES.get(field, f"give the {dm.name} splits a `{field}` field (split.fields)")
            raise ConfigError(f"{where} and data {dm.name} provides none; {fix}")
        if field == "label" and bool((data.labels < 0).any()):
            raise ConfigError(f"{where} and the {dm.name} pretraining split has unlabelled samples; "
                              f"{FIXES['label']}")
