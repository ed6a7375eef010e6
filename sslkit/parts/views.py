"""Which augmented views the online network and the key network compute for a head.

A head declares the views it reads (``query_views``: from ``z``; ``key_views``: from the momentum
keys ``k``) as slices over the V augmented views, global crops first; both default to all views.
The module runs the online network only on the query views and the key network only on the key
views, and passes the head ``z[:, query_views]`` and ``k[:, key_views]``. MoCo v2 reads view 0
as its query and the other views' keys, so it pays for one online and V - 1 key forwards instead
of V of each.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from sslkit.errors import ConfigError

ALL = slice(None)


class ViewPlan:
    """The query and key view indices of ``head`` under ``augment``, checked before any work:
    ``n_global`` (where a head has one) equals ``augment.views``; keys (and so queue entries)
    come from global crops only, unless the head sets ``keys_from_local_crops``; every view the
    augmentation makes is used by the head."""

    def __init__(self, head: nn.Module, num_views: int, global_views: int) -> None:
        name = type(head).__name__
        n_global = getattr(head, "n_global", None)
        if n_global is not None and n_global != global_views:
            raise ConfigError(
                f"loss.n_global={n_global} but augment.views={global_views}: the global crops are "
                f"the leading augment.views views; set loss.n_global={global_views}"
            )
        requires = set(getattr(head, "requires", ()))
        views = range(num_views)
        self.query = list(views[getattr(head, "query_views", ALL)])
        self.key = list(views[getattr(head, "key_views", ALL)]) if requires & {"k", "queue"} else []
        if not self.query:
            raise ConfigError(f"{name} reads no query view of the {num_views} augmented views")
        local_keys = [i for i in self.key if i >= global_views]
        if local_keys and not getattr(head, "keys_from_local_crops", False):
            raise ConfigError(
                f"{name} would take keys (and queue entries) of local crops {local_keys}; keys come "
                f"from the {global_views} global crops only: set augment.local_views=0"
                + (" or use loss=cacr_mocov3 for multi-crop" if not hasattr(head, "n_global") else "")
            )
        unused = sorted(set(views) - set(self.query) - set(self.key))
        if unused:
            raise ConfigError(
                f"{name} uses none of augmented views {unused} (queries {self.query}, keys "
                f"{self.key}); lower augment.views / augment.local_views"
            )

    @staticmethod
    def pick(views: Sequence[Tensor], which: Sequence[int]) -> list[Tensor]:
        return [views[i] for i in which]
