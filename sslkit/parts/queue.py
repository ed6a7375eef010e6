"""First-in first-out queue of past keys (MoCo's dictionary)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sslkit.errors import ConfigError


class KeyQueue(nn.Module):
    """A ``[size, dim]`` buffer filled in FIFO order; saved in checkpoints.

    Until it has been filled once, only the rows written so far are returned by ``entries``
    (the official MoCo code starts from random unit vectors instead; an empty start avoids
    training against noise). The module pushes keys already gathered from every rank, so the
    queue is identical on all ranks.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size <= 0:
            raise ValueError(f"queue_size must be > 0, got {size}")
        self.register_buffer("keys", torch.zeros(size, dim))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    def entries(self) -> Tensor:
        return self.keys[: int(self.filled)].clone()

    @torch.no_grad()
    def push(self, keys: Tensor) -> None:
        size = self.keys.shape[0]
        keys = keys.detach().to(self.keys.dtype)[-size:]
        n, ptr = keys.shape[0], int(self.ptr)
        idx = (torch.arange(n, device=keys.device) + ptr) % size
        self.keys[idx] = keys
        self.ptr.fill_((ptr + n) % size)
        self.filled.fill_(min(size, int(self.filled) + n))


def check_queue_fits(queue_size: int | None, images: int, dataset: str) -> None:
    """Refuse a queue as long as the data: once ``queue_size >= images`` every query finds its
    own key of the previous epoch among its negatives (MoCo's 65536 is sized for ImageNet's
    1.28M images; Fashion-MNIST has 60k, CIFAR 50k)."""
    if queue_size is None or queue_size < images:
        return
    fits = 1 << max(0, (images // 4).bit_length() - 1)  # a power of two at most a quarter of the data
    raise ConfigError(
        f"loss.queue_size={queue_size} is not below the {images} pretraining images of {dataset}: "
        f"each query's own key from the previous epoch would be one of its negatives; set "
        f"loss.queue_size={min(fits, 4096)} (or any value below {images})"
    )
