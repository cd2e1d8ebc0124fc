"""A conditional GAN in pooled-feature space: an MLP generator fed noise and a label embedding, and a
projection discriminator (Miyato & Koyama, 2018: ``psi(phi(x)) + <embed(y), phi(x)>``).

It trains on a domain's frozen-encoder features (standardised per dimension) with the non-saturating loss.
Two optimisers alternate, one discriminator and one generator update a step, which the one training loop
(a single model, a single optimiser) does not model; this loop is that small difference and nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fanbu.errors import DomainError
from fanbu.synthetic.config import GANConfig


class Generator(nn.Module):
    """``G(z, y)``: noise ``(n, noise)`` and labels ``(n,)`` to features ``(n, width)``."""

    def __init__(self, noise: int, hidden: int, width: int, num_labels: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_labels, noise)
        self.net = nn.Sequential(nn.Linear(2 * noise, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden),
                                 nn.LeakyReLU(0.2), nn.Linear(hidden, width))

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        return self.net(torch.cat([z, self.embed(labels)], dim=-1))  # (n, width)


class Discriminator(nn.Module):
    """Projection discriminator: a real/fake logit ``(n,)`` for features ``(n, width)`` of labels ``(n,)``."""

    def __init__(self, width: int, hidden: int, num_labels: int) -> None:
        super().__init__()
        self.phi = nn.Sequential(nn.Linear(width, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden),
                                 nn.LeakyReLU(0.2))
        self.psi = nn.Linear(hidden, 1)
        self.embed = nn.Embedding(num_labels, hidden)

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        h = self.phi(x)  # (n, hidden)
        return self.psi(h).squeeze(-1) + (self.embed(labels) * h).sum(dim=-1)  # (n,)


@dataclass
class ConditionalGAN:
    """A trained generator and the standardisation it was trained under."""

    generator: Generator
    mean: Tensor  # (width,)
    std: Tensor  # (width,)
    noise: int
    history: list[dict[str, float]] = field(default_factory=list)

    @torch.no_grad()
    def sample(self, labels: Tensor, seed: int = 0) -> Tensor:
        """Features ``(n, width)`` for ``labels`` ``(n,)``, in the real data's scale."""
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(labels.shape[0], self.noise, generator=gen)  # (n, noise)
        self.generator.eval()
        return self.generator(z, labels.long()) * self.std + self.mean  # (n, width)

    def sample_per_label(self, num_labels: int, per_label: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        """``per_label`` rows of each label: features ``(num_labels * per_label, width)`` and their labels."""
        labels = torch.arange(num_labels).repeat_interleave(per_label)  # (n,)
        return self.sample(labels, seed), labels


@dataclass
class GANResult:
    """The GAN and how training went."""

    gan: ConditionalGAN
    steps: int
    rows: int


def train_gan(features: Tensor, labels: Tensor, num_labels: int, config: GANConfig, seed: int = 0) -> GANResult:
    """Train a conditional GAN on ``features`` ``(n, width)`` with ``labels`` ``(n,)``.

    Raises:
        DomainError: no rows, or rows and labels that differ in number.
    """
    if features.shape[0] == 0 or features.shape[0] != labels.shape[0]:
        raise DomainError(f"augment.gan: {features.shape[0]} feature rows and {labels.shape[0]} labels; give the "
                          "domain's labelled (or teacher-labelled) features, one label per row")
    x = features.float()
    mean = x.mean(dim=0) if config.standardise else torch.zeros(x.shape[1])
    std = x.std(dim=0).clamp(min=1e-4) if config.standardise and x.shape[0] > 1 else torch.ones(x.shape[1])
    x = (x - mean) / std  # (n, width)
    y = labels.long()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g = Generator(config.noise, config.hidden, x.shape[1], num_labels)
        d = Discriminator(x.shape[1], config.hidden, num_labels)
        g_opt = torch.optim.Adam(g.parameters(), lr=config.lr, betas=(0.5, 0.999))
        d_opt = torch.optim.Adam(d.parameters(), lr=config.lr, betas=(0.5, 0.999))
        history = []
        for step in range(config.steps):
            rows = torch.randint(0, x.shape[0], (config.batch_size,))
            real, real_y = x[rows], y[rows]  # (batch, width), (batch,)
            fake = g(torch.randn(config.batch_size, config.noise), real_y)  # (batch, width)
            d_loss = F.softplus(-d(real, real_y)).mean() + F.softplus(d(fake.detach(), real_y)).mean()
            d_opt.zero_grad()
            d_loss.backward()
            d_opt.step()
            g_loss = F.softplus(-d(fake, real_y)).mean()  # non-saturating
            g_opt.zero_grad()
            g_loss.backward()
            g_opt.step()
            if step % max(1, config.steps // 20) == 0 or step == config.steps - 1:
                history.append({"step": step, "d_loss": d_loss.item(), "g_loss": g_loss.item()})
    return GANResult(ConditionalGAN(g, mean, std, config.noise, history), config.steps, int(x.shape[0]))
