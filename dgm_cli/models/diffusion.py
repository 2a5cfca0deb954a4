"""The denoising diffusion probabilistic model (Ho, Jain and Abbeel 2020), with DDIM sampling (Song et al. 2021).

Data: the 8-bit pixels scaled to [-1, 1], x0 = x / 127.5 - 1, so the 256
values are bins of width 2/255. The forward process adds Gaussian noise in T
steps, q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t I), whose marginal
has the closed form q(x_t | x0) = N(sqrt(abar_t) x0, (1 - abar_t) I) with
abar_t = prod_{s<=t} alpha_s. Variance schedules: `linear` (beta from 1e-4 to
0.02 for T = 1000, scaled by 1000/T otherwise, at most 0.999) and `cosine` (Nichol and
Dhariwal 2021: abar_t = f(t)/f(0), f(t) = cos^2((t/T + 0.008)/1.008 pi/2),
beta clipped at 0.999).

A U-Net eps_theta(x_t, t) predicts the noise; training minimises
|eps - eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t)|^2 for t uniform
in 1..T (Ho's "simple" loss). A conditional model adds a class embedding to
the time embedding and, with probability `label_dropout`, trains with the
"no class" embedding instead, so one network gives eps(x, y) and eps(x) and
sampling can use classifier-free guidance (Ho and Salimans 2021):
eps = (1 + w) eps(x, y) - w eps(x).

The reverse process p(x_{t-1} | x_t) = N(mu_theta(x_t, t), sigma_t^2 I) has
the mean of the forward posterior q(x_{t-1} | x_t, x0) at the predicted x0,
and its variance beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t; the last
step is a discretized Gaussian decoder with sigma_1^2 = beta_1 over the 256
pixel values (Ho et al. section 3.3). The variational bound on -log P(x) of
the 8-bit image is then
    L = KL(q(x_T | x0) || N(0, I)) + sum_{t=2..T} E_q KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t))
        - E_q log p(x0 | x1),
in the same units as the flows' dequantized bits/dim. `prior_term` and
`timestep_term` give its parts per image; evaluate.timestep_bound adds them
over all T steps or an unbiased sample of them.

Samplers: `ancestral` (all T steps of p), and `ddim` with any number of
steps S (eta = 0: deterministic, so x_T is a latent that decodes to one image
and real images encode to latents by running it backwards; eta = 1 with S = T
is the ancestral sampler, and with S < T the ancestral sampler respaced: each
step draws from q(x_s | x_t, x0-hat) between the visited steps, as Nichol &
Dhariwal 2021 strided DDPM sampling). The weights' moving average (`--ema`) samples.
"""

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dgm_cli.config import check, classes_option, minutes_option, option
from dgm_cli.data import IMAGE_SHAPE, PIXELS
from dgm_cli.errors import DgmError
from dgm_cli.models.base import GenerativeModel, adam, update_average
from dgm_cli.registry import ModelSpec, register, searched_budgets

SCHEDULES = ("linear", "cosine")
SAMPLERS = ("ddim", "ancestral")
BIN = 1 / 255  # half the width of one pixel value's bin on [-1, 1]
SAMPLE_BATCH = 500  # images denoised together


@dataclass(frozen=True)
class DiffusionConfig:
    width: int = option(32, "Channels of the U-Net at 28x28 (twice as many at 14x14 and 7x7).", min=4, max=1024)
    blocks: int = option(1, "Residual blocks per U-Net level and direction.", min=1, max=8)
    timesteps: int = option(1000, "Diffusion steps T.", min=2, max=10_000)
    schedule: str = option(
        "linear", "Variance schedule: linear (Ho et al.) or cosine (Nichol and Dhariwal).", choices=SCHEDULES
    )
    ema: float = option(
        0.999,
        "Decay of the moving average of the weights that samples (0 = sample from the live weights).",
        min=0.0,
        max=0.99999,
    )
    epochs: int = option(20, "Passes over the training split.", min=0, max=100_000)
    minutes: float = minutes_option()
    batch_size: int = option(128, "Images per optimizer step.", min=1, max=65_536)
    lr: float = option(2e-4, "Adam learning rate.", min=1e-8, max=10.0)
    max_grad_norm: float = option(
        1.0, "Clip the gradient's global norm to this before each step (0 = no clipping).", min=0.0, max=1e6
    )
    sample_steps: int = option(
        50, "DDIM steps of the default sampler (dgm sample --steps overrides it).", min=1, max=10_000
    )
    conditional: bool = option(
        False, "Learn p(x|y): the class joins the time embedding (with label dropout, for classifier-free guidance)."
    )
    classes: int = classes_option()
    label_dropout: float = option(
        0.1,
        "Conditional models: the share of training images whose label is replaced by 'no class', which guidance needs.",
        min=0.0,
        max=1.0,
    )
    sample_epochs: tuple[int, ...] = option(
        (0, 1, 5, 10, 20),
        "Epochs after which a sample grid is saved; 0 = before "
        "training, later ones are clipped to the run's last epoch.",
        min=0,
    )

    def __post_init__(self):
        check(self)
        if self.sample_steps > self.timesteps:
            raise DgmError(f"--sample-steps {self.sample_steps} is more than the {self.timesteps} diffusion steps")


# ---------------------------------------------------------------- the schedule


def make_betas(schedule: str, timesteps: int) -> torch.Tensor:
    """beta_1..beta_T, float64 (T,)."""
    if schedule == "linear":
        scale = 1000 / timesteps
        # clipped like the cosine schedule's: below about 50 steps the scaled rates would pass 1
        return torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64).clamp(max=0.999)
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + 0.008) / 1.008 * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=0.999)


# ---------------------------------------------------------------- the network


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of the step t (B,), (B, dim), as the Transformer's positions."""
    half = dim // 2
    frequencies = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * frequencies[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups (as many as divide the channels: a skip concatenation can make 12)."""
    return nn.GroupNorm(math.gcd(8, channels), channels)


class ResidualBlock(nn.Module):
    """GroupNorm-SiLU-conv, plus the step (and class) embedding as a per-channel shift, GroupNorm-SiLU-conv."""

    def __init__(self, inputs: int, outputs: int, embedding: int):
        super().__init__()
        self.norm1, self.conv1 = norm(inputs), nn.Conv2d(inputs, outputs, 3, padding=1)
        self.shift = nn.Linear(embedding, outputs)
        self.norm2, self.conv2 = norm(outputs), nn.Conv2d(outputs, outputs, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as its skip connection
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(inputs, outputs, 1) if inputs != outputs else nn.Identity()

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.shift(embedding)[:, :, None, None]
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class UNet(nn.Module):
    """28x28 -> 14x14 -> 7x7 and back, with skip connections; widths w, 2w, 2w; no attention (CPU-sized)."""

    def __init__(self, width: int, blocks: int, classes: int):
        super().__init__()
        widths, embedding = (width, 2 * width, 2 * width), 4 * width
        self.width = width
        self.time = nn.Sequential(nn.Linear(width, embedding), nn.SiLU(), nn.Linear(embedding, embedding))
        # classes + 1 rows: the last is "no class", the unconditional half of classifier-free guidance.
        self.label = nn.Embedding(classes + 1, embedding) if classes else None
        self.stem = nn.Conv2d(1, width, 3, padding=1)
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        channels, skips = width, [width]
        for level, out in enumerate(widths):
            for _ in range(blocks):
                self.down.append(ResidualBlock(channels, out, embedding))
                channels = out
                skips.append(channels)
            if level < len(widths) - 1:
                self.downsample.append(nn.Conv2d(channels, channels, 3, stride=2, padding=1))
                skips.append(channels)
        self.middle = nn.ModuleList([ResidualBlock(channels, channels, embedding) for _ in range(2)])
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for level, out in reversed(list(enumerate(widths))):
            for _ in range(blocks + 1):
                self.up.append(ResidualBlock(channels + skips.pop(), out, embedding))
                channels = out
            if level > 0:
                self.upsample.append(nn.Conv2d(channels, channels, 3, padding=1))
        self.head = nn.Sequential(norm(channels), nn.SiLU(), nn.Conv2d(channels, 1, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)  # an untrained network predicts no noise
        nn.init.zeros_(self.head[-1].bias)
        self.blocks, self.levels = blocks, len(widths)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """eps_theta(x_t, t[, y]) for x (B, 1, 28, 28), t (B,) in 1..T, labels (B,) (the last class = none)."""
        # channels_last: oneDNN's convolutions (forward and, above all, backward) run faster in it on the CPU.
        x = x.contiguous(memory_format=torch.channels_last)
        embedding = self.time(timestep_embedding(t, self.width))
        if self.label is not None:
            embedding = embedding + self.label(labels)
        h = self.stem(x)
        skips, blocks = [h], iter(self.down)
        for level in range(self.levels):
            for _ in range(self.blocks):
                h = next(blocks)(h, embedding)
                skips.append(h)
            if level < self.levels - 1:
                h = self.downsample[level](h)
                skips.append(h)
        for block in self.middle:
            h = block(h, embedding)
        blocks = iter(self.up)
        for level in reversed(range(self.levels)):
            for _ in range(self.blocks + 1):
                h = next(blocks)(torch.cat([h, skips.pop()], dim=1), embedding)
            if level > 0:
                size = skips[-1].shape[-1]  # 7 -> 14 -> 28
                h = self.upsample[self.levels - 1 - level](F.interpolate(h, size=size, mode="nearest"))
        return self.head(h)


# ---------------------------------------------------------------- the model


@dataclass(frozen=True)
class Sampler:
    """How one call of `sample`, `decode_images` or `encode_images` runs the reverse process: call arguments,
    never state kept in the model."""

    method: str = "ddim"
    steps: int = 50
    eta: float = 0.0  # DDIM's stochasticity: 0 deterministic
    guidance: float = 0.0  # classifier-free guidance weight w (conditional models)

    def describe(self) -> dict:
        return {"sampler": self.method, "steps": self.steps, "eta": self.eta, "guidance": self.guidance}


class Diffusion(GenerativeModel):
    capabilities = frozenset({"sample", "latent", "encoder", "variational_bound", "iterative_sampler"})
    sampler_options = frozenset({"sampler", "steps", "eta", "guidance", "on_step"})
    # The loss is the noise-prediction error; curves.png plots it under this name ("loss" panels are left out).
    headline_metrics = ("noise_mse",)
    monitor = ("noise_mse", "min")
    training_samples = 64

    def __init__(self, config: DiffusionConfig):
        super().__init__(config)
        self.net = UNet(config.width, config.blocks, self.classes).to(memory_format=torch.channels_last)
        self.net_ema = copy.deepcopy(self.net).requires_grad_(False) if config.ema > 0 else None
        betas = make_betas(config.schedule, config.timesteps)
        alphas_bar = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, 0)])
        # Index t = 0..T (abar_0 = 1, beta_0 unused); float64 so the bound's small differences stay exact.
        # Not saved in checkpoints: the config rebuilds them.
        self.register_buffer("betas", torch.cat([torch.zeros(1, dtype=torch.float64), betas]), persistent=False)
        self.register_buffer("alphas_bar", alphas_bar, persistent=False)

    @property
    def timesteps(self) -> int:
        return self.config.timesteps

    @property
    def latent_dim(self) -> int:
        return PIXELS

    @property
    def keeps_average(self) -> bool:
        return self.net_ema is not None

    def weight_averages(self):
        return [("net_ema.", self.net_ema, self.net)] if self.net_ema is not None else []

    @staticmethod
    def scale(batch: torch.Tensor) -> torch.Tensor:
        """uint8 images (B, 28, 28) -> x0 in [-1, 1], (B, 1, 28, 28)."""
        return batch.float().view(-1, *IMAGE_SHAPE) / 127.5 - 1

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [adam(self.net.parameters(), lr=self.config.lr)]

    def null_labels(self, labels: torch.Tensor | None, rows: int, device) -> torch.Tensor | None:
        """A conditional network's labels, or the 'no class' index for every row when labels is None."""
        if not self.classes:
            return None
        return labels if labels is not None else torch.full((rows,), self.classes, device=device, dtype=torch.long)

    def noisy(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps: a draw of q(x_t | x0)."""
        abar = self.alphas_bar[t].float().view(-1, 1, 1, 1)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * eps

    def denoising_loss(self, batch, labels, network) -> torch.Tensor:
        x0, labels = self.scale(batch), self.given_labels(labels)
        rows, device = len(x0), x0.device
        t = self.batch_noise(lambda n: torch.randint(1, self.timesteps + 1, (n,), device=device), rows)
        eps = self.batch_noise(lambda n: torch.randn(n, *IMAGE_SHAPE, device=device), rows)
        if labels is not None and self.config.label_dropout > 0:
            dropped = self.batch_noise(lambda n: torch.rand(n, device=device), rows) < self.config.label_dropout
            labels = torch.where(dropped, torch.full_like(labels, self.classes), labels)
        return F.mse_loss(network(self.noisy(x0, t, eps), t, labels), eps)

    def training_step(self, batch, labels=None):
        loss = self.denoising_loss(batch, labels, self.net)
        return {"loss": loss, "noise_mse": loss.detach()}

    def validation_step(self, batch, labels=None):
        loss = self.denoising_loss(batch, labels, self.net)
        return {"loss": loss, "noise_mse": loss}

    def optimizer_stepped(self, optimizer) -> None:
        """After each optimizer step: move the averaged network a step towards the live one (with the GAN's
        warm-up, base.ema_decay)."""
        if self.net_ema is not None:
            update_average(self.net_ema, self.net, optimizer, self.config.ema)

    # ------------------------------------------------------------ the reverse process

    def predict_noise(
        self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None, *, averaged: bool, guidance: float = 0.0
    ) -> torch.Tensor:
        """eps at x_t; with guidance w > 0, (1 + w) eps(x, y) - w eps(x) in one batched call."""
        network = self.net_ema if averaged and self.net_ema is not None else self.net
        if guidance == 0 or labels is None:
            return network(x, t, self.null_labels(labels, len(x), x.device))
        unconditional = self.null_labels(None, len(x), x.device)
        both = network(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, unconditional]))
        conditional, free = both.chunk(2)
        return (1 + guidance) * conditional - guidance * free

    def predicted_x0(self, x: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        abar = self.alphas_bar[t].float().view(-1, 1, 1, 1)
        return (x - (1 - abar).sqrt() * eps) / abar.sqrt()

    def posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_{t-1} | x_t, x0), for t >= 1 (the variance is 0 at t = 1)."""
        beta, abar, abar_prev = (
            v.view(-1, 1, 1, 1) for v in (self.betas[t], self.alphas_bar[t], self.alphas_bar[t - 1])
        )
        mean = (abar_prev.sqrt() * beta / (1 - abar)) * x0.double() + (
            (1 - beta).sqrt() * (1 - abar_prev) / (1 - abar)
        ) * xt.double()
        return mean, (1 - abar_prev) / (1 - abar) * beta

    def schedule_steps(self, steps: int) -> list[int]:
        """The S steps a sampler visits, from T down: evenly spaced in 1..T, always including T and 1."""
        return sorted({round(1 + i * (self.timesteps - 1) / max(steps - 1, 1)) for i in range(steps)}, reverse=True)

    def ddim_step(self, x, t: int, t_prev: int, eps, *, eta: float, noise=None, clip: bool = True):
        """x_{t_prev} from x_t with predicted noise eps (Song et al. eq. 12); t_prev = 0 gives x0. Without noise
        the mean of the step. clip: the predicted x0 clipped to the pixels' range [-1, 1], as samplers do."""
        abar, abar_prev = self.alphas_bar[t].item(), self.alphas_bar[t_prev].item()
        x0 = (x - math.sqrt(1 - abar) * eps) / math.sqrt(abar)
        if clip:
            x0 = x0.clamp(-1, 1)
            eps = (x - math.sqrt(abar) * x0) / math.sqrt(1 - abar)  # the noise that clipped x0 implies
        sigma = eta * math.sqrt((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev))
        direction = math.sqrt(max(1 - abar_prev - sigma**2, 0.0)) * eps
        out = math.sqrt(abar_prev) * x0 + direction
        return out + sigma * noise if sigma > 0 and noise is not None else out

    def make_sampler(
        self,
        sampler: str | None = None,
        steps: int | None = None,
        eta: float | None = None,
        guidance: float | None = None,
    ) -> Sampler:
        """The sampler these options choose, checked: DDIM with the config's sample_steps unless they say otherwise."""
        method = sampler or "ddim"
        if method not in SAMPLERS:
            raise DgmError(f"unknown sampler {method!r}; choose {' or '.join(SAMPLERS)}")
        if steps is not None and not 1 <= steps <= self.timesteps:
            raise DgmError(
                f"{steps} denoising steps are not between 1 and the model's {self.timesteps} diffusion steps"
            )
        if eta and method != "ddim":
            raise DgmError("eta sets DDIM's noise; the ancestral sampler draws its own at every one of the T steps")
        if eta is not None and not 0 <= eta <= 1:
            raise DgmError(f"eta must lie in [0, 1], got {eta:g}")
        if guidance and not self.classes:
            raise DgmError("guidance needs a conditional model (trained with --conditional); leave it out")
        return Sampler(method, steps or self.config.sample_steps, eta or 0.0, guidance or 0.0)

    def describe_sampler(self, *, on_step=None, **options) -> dict:
        return self.make_sampler(**options).describe()

    @torch.no_grad()
    def reverse(
        self,
        x: torch.Tensor,
        labels: torch.Tensor | None,
        sampler: Sampler,
        *,
        averaged: bool,
        generator: torch.Generator | None,
        on_step: Callable[[int], None] | None,
    ) -> torch.Tensor:
        """From x_T to x0 (in [-1, 1]) with `sampler`, calling on_step(1) after each step."""
        device, advance = x.device, on_step or (lambda count: None)
        draw = lambda: torch.randn(x.shape, generator=generator).to(device)  # noqa: E731
        if sampler.method == "ancestral":
            for t in range(self.timesteps, 0, -1):
                steps = torch.full((len(x),), t, device=device)
                eps = self.predict_noise(x, steps, labels, averaged=averaged, guidance=sampler.guidance)
                mean, variance = self.posterior(self.predicted_x0(x, steps, eps).clamp(-1, 1), x, steps)
                x = (mean + variance.sqrt() * draw().double()).float() if t > 1 else mean.float()
                advance(1)
            return x.clamp(-1, 1)
        visits = self.schedule_steps(sampler.steps)
        for t, t_prev in zip(visits, visits[1:] + [0]):
            eps = self.predict_noise(
                x, torch.full((len(x),), t, device=device), labels, averaged=averaged, guidance=sampler.guidance
            )
            x = self.ddim_step(x, t, t_prev, eps, eta=sampler.eta, noise=draw() if sampler.eta > 0 else None)
            advance(1)
        return x.clamp(-1, 1)

    def draw(self, n, *, generator, averaged, temperature, labels, on_step=None, **options):
        """n images, SAMPLE_BATCH at a time (every denoising step holds a batch's U-Net activations)."""
        sampler = self.make_sampler(**options)
        x = temperature * torch.randn(n, *IMAGE_SHAPE, generator=generator)
        labels = self.sample_labels(n, labels)
        images = []
        for start in range(0, n, SAMPLE_BATCH):
            chunk_labels = None if labels is None else labels[start : start + SAMPLE_BATCH]
            chunk = self.reverse(
                x[start : start + SAMPLE_BATCH].to(self.device),
                chunk_labels,
                sampler,
                averaged=averaged,
                generator=generator,
                on_step=on_step,
            )
            images.append((chunk + 1) / 2)
        return torch.cat(images)

    def denoising_steps(self, n: int, *, on_step=None, **options) -> int:
        """How many network calls (of up to SAMPLE_BATCH images) sampling n images with these sampler options
        takes: a progress bar's total."""
        sampler = self.make_sampler(**options)
        steps = self.timesteps if sampler.method == "ancestral" else len(self.schedule_steps(sampler.steps))
        return steps * -(-n // SAMPLE_BATCH)

    def deterministic_sampler(self, options: dict) -> Sampler:
        """A latent decodes to one image (and an image encodes to one latent) only under DDIM with eta = 0."""
        if options.get("sampler", "ddim") != "ddim" or options.get("eta"):
            raise DgmError("a latent decodes to one image only with the deterministic sampler (ddim, eta 0)")
        return self.make_sampler(steps=options.get("steps"), guidance=options.get("guidance"))

    def decode_images(
        self, z: torch.Tensor, labels: torch.Tensor | None = None, *, averaged: bool = True, on_step=None, **options
    ):
        """x_T = z (N, 784) -> images in [0, 1] by the deterministic DDIM sampler (eta = 0)."""
        sampler = self.deterministic_sampler(options)
        x = z.to(self.device).view(-1, *IMAGE_SHAPE)
        labels = self.sample_labels(len(x), labels)
        return (self.reverse(x, labels, sampler, averaged=averaged, generator=None, on_step=on_step) + 1) / 2

    @torch.no_grad()
    def encode_images(
        self, batch: torch.Tensor, labels: torch.Tensor | None = None, *, on_step=None, **options
    ) -> torch.Tensor:
        """Real uint8 images -> their DDIM latents x_T (N, 784): the deterministic sampler run backwards."""
        sampler = self.deterministic_sampler(options)
        x = self.scale(batch.to(self.device))
        labels = self.sample_labels(len(x), labels)
        visits = list(reversed(self.schedule_steps(sampler.steps)))
        for t_prev, t in zip([0] + visits[:-1], visits):
            eps = self.predict_noise(
                x,
                torch.full((len(x),), max(t_prev, 1), device=x.device),
                labels,
                averaged=True,
                guidance=sampler.guidance,
            )
            abar, abar_prev = self.alphas_bar[t].item(), self.alphas_bar[t_prev].item()
            x0 = (x - math.sqrt(1 - abar_prev) * eps) / math.sqrt(abar_prev)
            x = math.sqrt(abar) * x0 + math.sqrt(1 - abar) * eps
        return x.flatten(1)

    # ------------------------------------------------------------ the variational bound

    def prior_term(self, batch: torch.Tensor) -> torch.Tensor:
        """KL(q(x_T | x0) || N(0, I)) in nats per image (B,), float64."""
        x0, abar = self.scale(batch).double(), self.alphas_bar[-1]
        mean, variance = abar.sqrt() * x0, 1 - abar
        return (0.5 * (variance + mean**2 - 1 - torch.log(variance))).flatten(1).sum(1)

    def timestep_term(
        self, batch: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """One term of the bound per image (B,), nats, float64, at x_t = noisy(x0, t, eps): for t >= 2
        KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)), for t = 1 -log p(x0 | x1) under the discretized decoder."""
        x0 = self.scale(batch)
        xt = self.noisy(x0, t, eps)
        predicted = self.predict_noise(xt, t, labels, averaged=True)
        model_mean, _ = self.posterior(self.predicted_x0(xt, t, predicted), xt, t)
        true_mean, variance = self.posterior(x0, xt, t)
        first = t == 1
        kl = ((true_mean - model_mean) ** 2 / (2 * variance.clamp(min=1e-30))).flatten(1).sum(1)
        decoder = -discretized_log_likelihood(x0.double(), model_mean, self.betas[1].sqrt()).flatten(1).sum(1)
        return torch.where(first, decoder, kl)


def discretized_log_likelihood(x0: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log P(x0) per pixel of the 8-bit value x0 in [-1, 1] under N(mean, std^2) integrated over its bin of width
    2/255; the bins at -1 and 1 reach to -inf and +inf, so the 256 probabilities sum to one."""
    upper = torch.where(x0 > 1 - BIN, torch.full_like(x0, math.inf), x0 + BIN)
    lower = torch.where(x0 < -1 + BIN, torch.full_like(x0, -math.inf), x0 - BIN)
    # Above the mean, the same mass from the upper tail: a difference of two numbers near 1 would lose it.
    above = x0 > mean
    low, high = (
        torch.where(above, (mean - upper) / std, (lower - mean) / std),
        torch.where(above, (mean - lower) / std, (upper - mean) / std),
    )
    return torch.log((torch.special.ndtr(high) - torch.special.ndtr(low)).clamp(min=1e-300))


# What `--minutes M` trains with, for M up to 120, where these fields are not given: the seed's width-32 U-Net at
# 2e-4 takes about 300 steps in five minutes on a core and draws noise; a narrower net, a higher rate and
# smaller batches take ten times as many. The best of benchmarks/budget_search.py's grid on the validation
# split (docs/performance.md), at five minutes; at fifteen, where the two best (batch 64 at 2e-3, batch 32 at
# 1e-3) ended within 1 FID of each other and a quarter of the defaults'; and at sixty, where batch 64 at 2e-3
# still beat a wider net (width 24) in about the same number of steps. Each entry covers up to twice the budget it
# was searched at; longer budgets keep the defaults above.
FIFTEEN_MINUTE_WINNER = {"width": 16, "lr": 2e-3, "batch_size": 64}
BUDGET_DEFAULTS = searched_budgets(
    "diffusion",
    {5: {"width": 16, "lr": 1e-3, "batch_size": 32}, 15: FIFTEEN_MINUTE_WINNER, 60: FIFTEEN_MINUTE_WINNER},
)

register(
    ModelSpec(
        name="diffusion",
        config_class=DiffusionConfig,
        module_class=Diffusion,
        description="denoising diffusion model (DDPM): U-Net noise predictor, DDIM or ancestral sampling, bits/dim bound",
        budget_defaults=BUDGET_DEFAULTS,
    )
)
