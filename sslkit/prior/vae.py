"""``prior=vae``: a small VAE (Kingma & Welling 2014) trained on the pretraining images; its
encoder means are the prior. This is sslkit's own generative prior, for datasets without
released generative features: decoupled uniformity (Dufumier et al. 2023) and its code use
BigBiGAN encoder features (ImageNet-100, ``prior=features``) and binary attributes (CUB-200,
UT-Zappos, ``prior=attributes``), and train no VAE. Trained on the CPU once per (data,
settings) and cached on disk; ``python scripts/train_prior.py prior=vae ...`` fills the cache
ahead of a run."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslkit.prior.base import PriorSource, cached, fingerprint


class VAE(nn.Module):
    """MLP VAE on ``size x size`` images in [0, 1]: Bernoulli decoder, Gaussian encoder."""

    def __init__(self, in_dim: int, hidden_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(),
                                     nn.Linear(hidden_dim, 2 * latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden_dim), nn.ReLU(),
                                     nn.Linear(hidden_dim, in_dim))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mean, logvar = self.encoder(x).chunk(2, dim=-1)
        return mean, logvar

    def loss(self, x: Tensor, gen: torch.Generator) -> Tensor:
        """Negative ELBO per sample (nats): reconstruction BCE + KL(q(z|x) || N(0, I))."""
        mean, logvar = self.encode(x)
        eps = torch.randn(mean.shape, generator=gen)
        logits = self.decoder(mean + eps * (0.5 * logvar).exp())
        rec = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        kl = 0.5 * (mean.square() + logvar.exp() - 1 - logvar).sum()
        return (rec + kl) / len(x)


class VAEPrior(PriorSource):
    name = "vae"

    def __init__(self, latent_dim: int = 16, hidden_dim: int = 256, input_size: int = 32,
                 epochs: int = 5, batch_size: int = 256, lr: float = 1e-3, seed: int = 0,
                 cache_dir: str = "data/priors") -> None:
        self.settings = dict(latent_dim=latent_dim, hidden_dim=hidden_dim, input_size=input_size,
                             epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
        self.cache_dir = cache_dir
        self.last_loss: float | None = None  # negative ELBO of the last epoch, when trained here

    def _inputs(self, images: Tensor) -> Tensor:
        x = images.float() / 255.0
        size = self.settings["input_size"]
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True).clamp(0, 1)
        return x.flatten(1)

    def compute(self, dm, data):
        key = {"source": "vae", **self.settings, "data": fingerprint(dm, data)}
        return cached(self.cache_dir, key, lambda: self.fit(dm, data))

    def fit(self, dm, data) -> Tensor:
        with torch.random.fork_rng(devices=[]):  # leave the run's global RNG as it was
            torch.manual_seed(self.settings["seed"])
            return self._fit(dm, data)

    def _fit(self, dm, data) -> Tensor:
        s = self.settings
        gen = torch.Generator().manual_seed(s["seed"])
        sample = data[0]["image"]
        vae = VAE(sample.shape[0] * s["input_size"] ** 2, s["hidden_dim"], s["latent_dim"])
        opt = torch.optim.Adam(vae.parameters(), lr=s["lr"])
        loader = dm.loader(data, s["batch_size"], True, False)
        for epoch in range(s["epochs"]):
            loader.batch_sampler.set_epoch(epoch)
            total, count = 0.0, 0
            for batch in loader:
                loss = vae.loss(self._inputs(batch["image"]), gen)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, count = total + float(loss.detach()) * len(batch["image"]), count + len(batch["image"])
            self.last_loss = total / max(count, 1)
        vae.eval()
        with torch.no_grad():
            means = [vae.encode(self._inputs(b["image"]))[0]
                     for b in dm.loader(data, s["batch_size"], False, False)]
        return torch.cat(means)
