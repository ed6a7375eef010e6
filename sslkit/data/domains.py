"""A synthetic domain shift for in-memory datasets (the CPU demo of domain-aware GCA).

``data.domain_shift=[plain,invert,low_contrast]`` splits every split into as many domains as
styles: each sample gets a domain id (a seeded, balanced random assignment per split), its
image is redrawn in that domain's style, and the id is the batch's ``domain`` field. The class
content is untouched, so a good representation should classify across domains; the styles are
strong, global appearance changes of the kind PACS's art/cartoon/photo/sketch domains bring.
"""

from __future__ import annotations

import torch

from sslkit.errors import ConfigError


def _rotate90(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.rot90(x, 1, dims=(-2, -1)) if x.shape[-1] == x.shape[-2] else x.flip(-1)


def _noise(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    noisy = x.float() + 40.0 * torch.randn(x.shape, generator=gen)
    return noisy.clamp(0, 255).round().to(torch.uint8)


STYLES = {
    "plain": lambda x, gen: x,
    "invert": lambda x, gen: 255 - x,                       # negative image
    "low_contrast": lambda x, gen: (64 + x // 2).to(torch.uint8),  # grey veil, half contrast
    "rotate90": _rotate90,                                  # quarter turn (flip if not square)
    "noise": _noise,                                        # Gaussian pixel noise, sigma 40/255
}


def check_styles(styles) -> list[str]:
    styles = list(styles)
    unknown = [s for s in styles if s not in STYLES]
    if unknown or len(styles) < 2:
        raise ConfigError(
            f"data.domain_shift={styles}: give at least two styles out of {', '.join(STYLES)}"
            + (f" (unknown: {', '.join(map(str, unknown))})" if unknown else "")
        )
    return styles


def shift_domains(images: torch.Tensor, styles, seed: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 ``images`` [N, C, H, W] redrawn in ``styles``; returns (images, domain ids [N])."""
    styles = check_styles(styles)
    gen = torch.Generator().manual_seed(seed * 1000 + sum(map(ord, split)))
    n = len(images)
    domains = torch.randperm(n, generator=gen) % len(styles)
    out = images.clone()
    for d, style in enumerate(styles):
        idx = torch.nonzero(domains == d).flatten()
        out[idx] = STYLES[style](images[idx], gen)
    return out, domains


def apply_domain_shift(data, styles, seed: int, split: str, name: str):
    """Shift an in-memory split (``TensorImages``) in place and give it the ``domain`` field."""
    if not hasattr(data, "images"):
        raise ConfigError(
            f"data.domain_shift needs an in-memory dataset; {name} reads images one by one "
            "(use a folder tree with a domain level instead: data=domainfolder)"
        )
    data.images, data.fields["domain"] = shift_domains(data.images, styles, seed, split)
    return data
