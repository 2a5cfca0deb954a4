"""The variational autoencoder of the seed report (section 1), on binarized pixels.

Encoder x -> hidden -> (mean, log-variance) of a diagonal Gaussian q(z|x);
decoder z -> hidden -> Bernoulli logits of p(x|z); prior N(0, I). Training
maximises the one-sample ELBO
    log p(x|z) - KL(q(z|x) || p(z)),   z = mean + sigma * eps,
with the KL in closed form and log p(x|z) computed from logits, both summed
over dimensions, so every number is in nats per image.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dgm_cli.config import check, option
from dgm_cli.data import IMAGE_SHAPE, PIXELS
from dgm_cli.models.base import GenerativeModel, adam
from dgm_cli.registry import ModelSpec, register

LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class VAEConfig:
    zdim: int = option(20, "Latent dimensions (2 gives the drawable manifold).", min=1, max=1024)
    hidden: int = option(500, "Hidden units in the encoder and in the decoder.", min=1, max=16384)
    binarize: str = option(
        "dynamic",
        "Training pixels: 'dynamic' draws fresh binary images from the intensities every epoch, "
        "'static' draws them once (seeded).",
        choices=("dynamic", "static"),
    )
    epochs: int = option(40, "Passes over the training split.", min=0, max=100_000)
    batch_size: int = option(128, "Images per optimizer step.", min=1, max=65_536)
    lr: float = option(1e-3, "Adam learning rate.", min=1e-8, max=10.0)
    sample_epochs: tuple[int, ...] = option(
        (0, 10, 20, 30, 40),
        "Epochs after which sample grids (and the 2-D manifold) are saved; 0 = before training, "
        "later ones are clipped to the run's last epoch.",
        min=0,
    )

    def __post_init__(self):
        check(self)


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) summed over the last dimension.

    expm1(logvar) - logvar equals sigma^2 - 1 - log sigma^2 without the
    cancellation that loses all precision when sigma is close to 1.
    """
    return 0.5 * (mean.square() + torch.expm1(logvar) - logvar).sum(-1)


def bernoulli_log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x | logits) summed over the last dimension; stable for logits of any size."""
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)


def standard_normal_log_density(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * (z.square() + LOG_2PI).sum(-1)


class VAE(GenerativeModel):
    capabilities = frozenset({"sample", "latent", "encoder", "manifold", "latent_likelihood"})
    pixel_distribution = "bernoulli"
    monitor = ("elbo", "max")
    headline_metrics = ("elbo",)

    def __init__(self, config: VAEConfig):
        super().__init__(config)
        hidden, zdim = config.hidden, config.zdim
        # One linear layer gives mean and log-variance together: half the kernel launches of two heads.
        self.encoder = nn.Sequential(nn.Linear(PIXELS, hidden), nn.ReLU(), nn.Linear(hidden, 2 * zdim))
        self.decoder = nn.Sequential(nn.Linear(zdim, hidden), nn.ReLU(), nn.Linear(hidden, PIXELS))
        # The decoder starts as the uniform Bernoulli (all logits 0): the untrained ELBO is then
        # exactly -784 ln 2 - KL, about -543 nats, and the first steps learn the pixel means.
        nn.init.zeros_(self.decoder[-1].weight)
        nn.init.zeros_(self.decoder[-1].bias)

    @property
    def latent_dim(self) -> int:
        return self.config.zdim

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [adam(self.parameters(), lr=self.config.lr)]

    # ------------------------------------------------------------ pixels

    def prepare_split(self, images, *, train, generator):
        """Static binarization for evaluation splits (always) and for training when asked.

        A split stored as 0/255 makes the per-batch Bernoulli draw in
        binary_pixels() deterministic, so one code path serves both modes.
        """
        if train and self.config.binarize == "dynamic":
            return images
        return (torch.bernoulli(images.float() / 255, generator=generator) * 255).to(torch.uint8)

    def binary_pixels(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 images (B, 28, 28) -> float {0, 1} pixels (B, 784), drawn from the intensities.

        A pixel of intensity x is 1 with probability x / 255: for r uniform on {0, ..., 254},
        P(r < x) = x / 255 exactly. Drawing r as uint8 and comparing is cheaper on the CPU than
        torch.bernoulli on float probabilities (a sixth off the VAE's step there; benchmarks/vae_step.py).
        """
        pixels = batch.flatten(1)
        draw = lambda rows: torch.randint(0, 255, (rows, pixels.shape[1]), dtype=torch.uint8, device=pixels.device)  # noqa: E731
        return (self.batch_noise(draw, len(pixels)) < pixels).float()

    # ------------------------------------------------------------ the model

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.encoder(x).chunk(2, dim=-1)
        return mean, logvar

    def encode_images(self, batch: torch.Tensor) -> torch.Tensor:
        """Posterior means of q(z|x) for uint8 images (binarized by a draw, as everywhere)."""
        return self.encode(self.binary_pixels(batch))[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits (..., 784)."""
        return self.decoder(z)

    def decode_images(self, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli means as images (N, 1, 28, 28)."""
        return torch.sigmoid(self.decode(z)).view(-1, *IMAGE_SHAPE)

    def elbo(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-image one-sample ELBO and its two terms, for binary pixels x (B, 784)."""
        mean, logvar = self.encode(x)
        eps = self.batch_noise(lambda rows: torch.randn(rows, mean.shape[1], device=mean.device), len(mean))
        z = mean + torch.exp(0.5 * logvar) * eps
        reconstruction = bernoulli_log_likelihood(self.decode(z), x)
        kl = gaussian_kl(mean, logvar)
        return {"elbo": reconstruction - kl, "reconstruction": reconstruction, "kl": kl}

    def training_step(self, batch, labels=None):
        terms = self.elbo(self.binary_pixels(batch))
        means = {name: value.mean() for name, value in terms.items()}
        return {"loss": -means["elbo"], **{name: value.detach() for name, value in means.items()}}

    def validation_step(self, batch, labels=None):
        return {name: value.mean() for name, value in self.elbo(self.binary_pixels(batch)).items()}

    def log_weights(self, batch: torch.Tensor, k: int, *, proposal: str) -> torch.Tensor:
        """log p(x, z_i) - log r(z_i) for k draws z_i ~ r per image: (B, k).

        proposal "posterior": r = q(z|x), the importance-weighted estimator;
        proposal "prior":     r = p(z), the naive Monte-Carlo estimator (the weights are p(x|z_i)).
        The log of their mean is a stochastic lower bound on log p(x) either way.
        """
        x = self.binary_pixels(batch)
        if proposal == "prior":
            z = torch.randn(len(x), k, self.latent_dim, device=x.device)
            return bernoulli_log_likelihood(self.decode(z), x[:, None].expand(-1, k, -1))
        if proposal != "posterior":
            raise ValueError(f"unknown proposal {proposal!r}")
        mean, logvar = self.encode(x)
        eps = torch.randn(len(x), k, self.latent_dim, device=x.device)
        z = mean[:, None] + torch.exp(0.5 * logvar)[:, None] * eps
        log_px_z = bernoulli_log_likelihood(self.decode(z), x[:, None].expand(-1, k, -1))
        log_qz = -0.5 * (eps.square() + logvar[:, None] + LOG_2PI).sum(-1)
        return log_px_z + standard_normal_log_density(z) - log_qz

    def sample(self, n, *, generator=None, averaged=True, temperature=1.0):
        z = temperature * torch.randn(n, self.latent_dim, generator=generator).to(self.device)
        return self.decode_images(z)

    def manifold(self, grid: int, edge: float = 0.05) -> torch.Tensor:
        """Decoder means over a grid x grid lattice of z, row-major, for a 2-D latent space.

        Grid points sit at the standard-normal quantiles of evenly spaced
        probabilities edge..1-edge, so equal areas of prior mass get equal room;
        z1 grows to the right, z2 grows upwards.
        """
        if self.latent_dim != 2:
            raise ValueError("the manifold needs a 2-D latent space")
        values = torch.special.ndtri(torch.linspace(edge, 1 - edge, grid, dtype=torch.float64)).float()
        z2, z1 = torch.meshgrid(values.flip(0), values, indexing="ij")
        return self.decode_images(torch.stack([z1, z2], dim=-1).reshape(-1, 2).to(self.device))


register(ModelSpec(name="vae", config_class=VAEConfig, module_class=VAE, description="Variational autoencoder (seed report section 1)"))
