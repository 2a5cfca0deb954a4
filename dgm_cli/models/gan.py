"""The generative adversarial network of the seed report (section 2).

Generator z (standard normal) -> 128 -> 256 -> 512 -> 1024 -> 784, LeakyReLU(0.2)
after each hidden layer, BatchNorm on the 256/512/1024 layers, tanh output;
discriminator 784 -> 512 -> 256 -> 1 with LeakyReLU(0.2) and dropout 0.3,
producing a logit. Pixels are scaled to [-1, 1].

Each training step is one discriminator step on real against fake images and
one generator step with the non-saturating objective (maximise log D(G(z)),
seed 2.4), both written as binary cross-entropy on logits, which is stable
where log(sigmoid(.)) is not. The GAN owns its two Adam optimizers and steps
them inside training_step.
"""

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dgm_cli.config import check, classes_option, minutes_option, option
from dgm_cli.data import IMAGE_SHAPE, PIXELS
from dgm_cli.models.base import GenerativeModel, adam, update_average
from dgm_cli.models.conditioning import with_label
from dgm_cli.registry import ModelSpec, register, searched_budgets


@dataclass(frozen=True)
class GANConfig:
    latent_dim: int = option(100, "Dimensions of the generator's standard-normal input.", min=1, max=1024)
    ema: float = option(
        0.0,
        "Decay of an exponential moving average of the generator weights, used for sampling "
        "(0 = off; 0.999 is typical); warmed up as min(ema, (1 + t) / (10 + t)) at step t.",
        min=0.0,
        max=0.99999,
    )
    epochs: int = option(200, "Passes over the training split.", min=0, max=100_000)
    minutes: float = minutes_option()
    batch_size: int = option(64, "Images per discriminator and generator step.", min=1, max=65_536)
    lr: float = option(2e-4, "Adam learning rate of both networks.", min=1e-8, max=10.0)
    beta1: float = option(0.5, "Adam beta1 of both networks.", min=0.0, max=0.9999)
    beta2: float = option(0.999, "Adam beta2 of both networks.", min=0.0, max=0.99999)
    conditional: bool = option(False, "Learn to draw a given class: G(z, y), and a projection discriminator D(x, y).")
    classes: int = classes_option()
    sample_epochs: tuple[int, ...] = option(
        (0, 2, 8, 100, 200),
        "Epochs after which a 5x5 sample grid is saved; 0 = before training, later ones are clipped to the "
        "run's last epoch.",
        min=0,
    )

    def __post_init__(self):
        check(self)


def generator_network(latent_dim: int, classes: int = 0) -> nn.Sequential:
    """z (with a conditional model's one-hot label appended) -> 784 pixels in [-1, 1]."""
    layers, width = [nn.Linear(latent_dim + classes, 128), nn.LeakyReLU(0.2)], 128
    for out in (256, 512, 1024):
        layers += [nn.Linear(width, out), nn.BatchNorm1d(out), nn.LeakyReLU(0.2)]
        width = out
    return nn.Sequential(*layers, nn.Linear(width, PIXELS), nn.Tanh())


DROPOUT = 0.3


class Discriminator(nn.Sequential):
    """784 -> 512 -> 256 -> 1 with LeakyReLU(0.2) and dropout 0.3, producing a logit.

    The dropout masks are passed in (`keep`, one boolean tensor per dropout layer) rather than drawn
    inside, so that under torchrun they can be drawn for the global batch like all the step's other
    noise (GenerativeModel.batch_noise); without masks (evaluation) dropout is off.

    Conditional (classes > 0): the projection discriminator of Miyato and Koyama (2018),
    D(x, y) = w . phi(x) + b + embed(y) . phi(x), with phi(x) the 256 features before the last layer:
    the label enters as an inner product with the features, which is the form the optimal
    discriminator's log-ratio takes for a class-conditional model, instead of as one more input.
    """

    widths = (512, 256)
    depth = 7  # the layers of the unconditional network, indices 0..6 (the checkpoints' key names)

    def __init__(self, classes: int = 0):
        super().__init__(
            nn.Linear(PIXELS, 512),
            nn.LeakyReLU(0.2),
            nn.Dropout(DROPOUT),
            nn.Linear(512, 256),
            nn.LeakyReLU(0.2),
            nn.Dropout(DROPOUT),
            nn.Linear(256, 1),
        )
        self.embedding = nn.Embedding(classes, self.widths[-1]) if classes else None
        if self.embedding is not None:
            nn.init.zeros_(self.embedding.weight)  # starts as the unconditional discriminator

    def forward(
        self, x: torch.Tensor, keep: list[torch.Tensor] | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        masks = iter(keep or ())
        *body, last = (self[index] for index in range(self.depth))
        for layer in body:
            if isinstance(layer, nn.Dropout):
                x = x * next(masks) / (1 - DROPOUT) if keep is not None else x
            else:
                x = layer(x)
        logits = last(x)
        if self.embedding is not None:
            logits = logits + (self.embedding(labels) * x).sum(1, keepdim=True)
        return logits


def logit_loss(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Mean binary cross-entropy of logits against a constant label (1 = real, 0 = fake)."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


class GAN(GenerativeModel):
    capabilities = frozenset({"sample", "latent"})
    manual_optimization = True
    monitor = None  # no held-out number says one GAN epoch is better than another: only last.safetensors
    headline_metrics = ("d_loss", "g_loss", "d_real", "d_fake")
    training_samples = 25
    # At the game's equilibrium D = 1/2 everywhere and the discriminator's loss is log 4 (seed 2.3).
    # and the generator's non-saturating loss -log D(G(z)) is log 2.
    reference_lines = {
        name: (value, "equilibrium")
        for name, value in {"d_real": 0.5, "d_fake": 0.5, "d_loss": math.log(4), "g_loss": math.log(2)}.items()
    }

    def __init__(self, config: GANConfig):
        super().__init__(config)
        self.generator = generator_network(config.latent_dim, self.classes)
        self.discriminator = Discriminator(self.classes)
        self.parallel_parts = {}  # under torchrun: the DistributedDataParallel wrappers, see distribute
        self.generator_ema = None
        if config.ema > 0:
            self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        betas = (self.config.beta1, self.config.beta2)
        self.d_optimizer = adam(self.discriminator.parameters(), lr=self.config.lr, betas=betas)
        self.g_optimizer = adam(self.generator.parameters(), lr=self.config.lr, betas=betas)
        return [self.d_optimizer, self.g_optimizer]

    @staticmethod
    def scale(batch: torch.Tensor) -> torch.Tensor:
        """uint8 images (B, 28, 28) -> floats in [-1, 1], (B, 784)."""
        return batch.flatten(1).float() / 127.5 - 1

    @property
    def keeps_average(self) -> bool:
        return self.generator_ema is not None

    def weight_averages(self):
        return [("generator_ema.", self.generator_ema, self.generator)] if self.generator_ema is not None else []

    def training_only_tensors(self) -> set[str]:
        return super().training_only_tensors() | {"discriminator." + name for name in self.discriminator.state_dict()}

    def decode_images(
        self, z: torch.Tensor, labels: torch.Tensor | None = None, *, averaged: bool = True
    ) -> torch.Tensor:
        """Images in [0, 1], (N, 1, 28, 28), from the averaged generator when there is one."""
        generator = self.generator_ema if averaged and self.generator_ema is not None else self.generator
        z = with_label(z, self.sample_labels(len(z), labels), self.classes)
        return ((generator(z) + 1) / 2).view(-1, *IMAGE_SHAPE)

    def distribute(self, wrap):
        """Each network its own DistributedDataParallel: the two steps back-propagate separately."""
        self.parallel_parts = {"generator": wrap(self.generator), "discriminator": wrap(self.discriminator)}
        return self.training_step

    def latents(self, rows: int, device) -> torch.Tensor:
        return self.batch_noise(lambda size: torch.randn(size, self.latent_dim, device=device), rows)

    def dropout_masks(self, rows: int, device) -> list[torch.Tensor]:
        draw = lambda width: lambda size: torch.rand(size, width, device=device) >= DROPOUT  # noqa: E731
        return [self.batch_noise(draw(width), rows) for width in Discriminator.widths]

    def training_step(self, batch, labels=None):
        generator = self.parallel_parts.get("generator", self.generator)
        discriminator = self.parallel_parts.get("discriminator", self.discriminator)
        real, labels = self.scale(batch), self.given_labels(labels)
        rows, device = len(real), real.device
        # A conditional model's fakes are drawn for the real images' labels: the same class mix, and each
        # class's real and fake images meet in the same discriminator step.
        fake = generator(with_label(self.latents(rows, device), labels, self.classes))
        both = None if labels is None else torch.cat([labels, labels])

        # Real and fake images in one forward pass (one pass per backward, as DistributedDataParallel
        # requires; there is no batch normalisation in the discriminator, so this changes nothing else).
        keep = [torch.cat(pair) for pair in zip(self.dropout_masks(rows, device), self.dropout_masks(rows, device))]
        real_logits, fake_logits = discriminator(torch.cat([real, fake.detach()]), keep, both).split(rows)
        d_loss = logit_loss(real_logits, 1.0) + logit_loss(fake_logits, 0.0)
        self.d_optimizer.zero_grad(set_to_none=True)
        self.shard_loss(d_loss).backward()
        self.d_optimizer.step()

        # Non-saturating: minimise -log D(G(z)) rather than log(1 - D(G(z))), whose gradient vanishes
        # exactly when the discriminator wins, early in training. The discriminator is called
        # directly, not through its data-parallel wrapper: its gradients from this loss are discarded.
        g_loss = logit_loss(self.discriminator(fake, self.dropout_masks(rows, device), labels), 1.0)
        self.g_optimizer.zero_grad(set_to_none=True)
        self.shard_loss(g_loss).backward()
        self.g_optimizer.step()
        self.update_ema()

        return {
            "d_loss": d_loss.detach(),
            "g_loss": g_loss.detach(),
            "d_real": torch.sigmoid(real_logits).mean().detach(),
            "d_fake": torch.sigmoid(fake_logits).mean().detach(),
        }

    def update_ema(self) -> None:
        """Move the averaged generator a step towards the live one; BatchNorm statistics are copied."""
        if self.generator_ema is not None:
            update_average(self.generator_ema, self.generator, self.g_optimizer, self.config.ema)

    def validation_step(self, batch, labels=None):
        real, labels = self.scale(batch), self.given_labels(labels)
        fake = self.generator(with_label(self.latents(len(real), real.device), labels, self.classes))
        real_logits, fake_logits = self.discriminator(real, labels=labels), self.discriminator(fake, labels=labels)
        return {
            "d_loss": logit_loss(real_logits, 1.0) + logit_loss(fake_logits, 0.0),
            "d_real": torch.sigmoid(real_logits).mean(),
            "d_fake": torch.sigmoid(fake_logits).mean(),
        }

    def draw(self, n, *, generator, averaged, temperature, labels):
        z = temperature * torch.randn(n, self.latent_dim, generator=generator).to(self.device)
        return self.decode_images(z, labels, averaged=averaged)


# What `--minutes M` trains with, for M up to 120, where these fields are not given: the best validation FID
# of benchmarks/budget_search.py's grid at five minutes on a core, and of its defaults against it at fifteen
# and sixty (docs/performance.md). A moving average of the generator's weights halved the defaults' FID at five
# minutes, cut it to a third at fifteen and by a third at sixty; larger rates, other batches and a shorter
# average did less. One entry per search, each for up to twice the budget it was searched at; longer budgets
# keep the defaults above.
BUDGET_DEFAULTS = searched_budgets("gan", {5: {"ema": 0.999}, 15: {"ema": 0.999}, 60: {"ema": 0.999}})

register(
    ModelSpec(
        name="gan",
        config_class=GANConfig,
        module_class=GAN,
        description="generative adversarial network: MLP generator and discriminator, non-saturating loss",
        budget_defaults=BUDGET_DEFAULTS,
    )
)
