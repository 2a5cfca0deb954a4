"""The normalizing flow of the seed report (section 3), and a multi-scale variant.

A flow is an invertible map f from an image to a standard-normal latent of the
same size, so the change-of-variables formula gives an exact density:
    log p(w) = log N(f(w); 0, I) + log |det df/dw|.

The data are 8-bit integers x in {0..255}^784. Training sees w = x + u with
u ~ U[0, 1)^784 (uniform dequantisation); a density p(w) on [0, 256)^784
bounds the probability of the discrete image from below,
    log P(x) = log of the integral of p over the unit cube at x >= E_u log p(x + u),
so -log2 p(w) / 784 is the bits/dim figure published MNIST results quote.
Before the learned layers, w is mapped to the real line, each step with its
exact log-determinant:
    v = w / 256                 in (0, 1)      -784 log 256
    y = alpha + (1 - 2 alpha) v                +784 log(1 - 2 alpha)
    z0 = logit(y)                              -sum log y(1 - y)

Architectures (--arch):
  realnvp-mlp  the seed's: 8 affine couplings on the flat image, alternating a
               checkerboard mask and its complement; each coupling network is
               Linear-ReLU-Linear-ReLU-Linear with 1024 hidden units and a
               zero-initialised last layer; log-scales pass through tanh.
  realnvp-ms   multi-scale and convolutional (RealNVP / Glow): squeeze 1x28x28
               to 4x14x14, K steps of (actnorm, invertible 1x1 convolution,
               affine channel coupling with a small conv net), factor out half
               the channels under a Gaussian whose mean and scale are predicted
               from the other half, squeeze to 8x7x7, K more steps.

Every layer maps x -> (y, log|det dy/dx| per image) and has an exact inverse.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import distributed, nn

from dgm_cli.config import check, option
from dgm_cli.data import IMAGE_SHAPE, PIXELS
from dgm_cli.models.base import GenerativeModel, adam
from dgm_cli.registry import ModelSpec, register

ARCHITECTURES = ("realnvp-mlp", "realnvp-ms")
LEVELS = 256  # 8-bit pixels
LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class FlowConfig:
    arch: str = option(
        "realnvp-mlp",
        "realnvp-mlp: the seed's 8 checkerboard couplings on the flat image; realnvp-ms: multi-scale "
        "convolutional flow (squeeze, actnorm, 1x1 convolutions, factor-out).",
        choices=ARCHITECTURES,
    )
    couplings: int = option(8, "realnvp-mlp: affine coupling layers.", min=1, max=64)
    hidden: int = option(1024, "realnvp-mlp: hidden units of each coupling network.", min=1, max=16384)
    steps: int = option(8, "realnvp-ms: flow steps per scale (two scales).", min=1, max=64)
    channels: int = option(64, "realnvp-ms: hidden channels of each coupling network.", min=1, max=1024)
    alpha: float = option(1e-5, "Margin of the logit transform: logit(alpha + (1 - 2 alpha) v).", min=1e-12, max=0.1)
    epochs: int = option(40, "Passes over the training split.", min=0, max=100_000)
    batch_size: int = option(128, "Images per optimizer step.", min=1, max=65_536)
    lr: float = option(1e-3, "Adam learning rate.", min=1e-8, max=10.0)
    lr_schedule: str = option(
        "constant",
        "constant (the seed's), or cosine: decay the learning rate to zero along a half cosine over the run.",
        choices=("constant", "cosine"),
    )
    max_grad_norm: float = option(
        10.0,
        "Clip the gradient's global norm to this before each step (0 = no clipping). Without it the seed's "
        "configuration diverged in epoch 16 of a measured run; typical norms there were 1.2-1.7.",
        min=0.0,
        max=1e6,
    )
    sample_epochs: tuple[int, ...] = option(
        (0, 1, 10, 20, 40),
        "Epochs after which a sample grid is saved; 0 = before training, later ones are clipped to the run's "
        "last epoch.",
        min=0,
    )

    def __post_init__(self):
        check(self)


def standard_normal_log_density(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over all but the first dimension."""
    return -0.5 * (z.square() + LOG_2PI).flatten(1).sum(1)


# ---------------------------------------------------------------- pixels <-> the real line


def to_logit_space(w: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Dequantised pixels w in [0, 256) (B, ...) -> (logit-space values, log-determinant per image)."""
    y = alpha + (1 - 2 * alpha) * (w / LEVELS)
    log_y, log_1my = torch.log(y), torch.log1p(-y)
    dims = w[0].numel()
    logdet = dims * (math.log(1 - 2 * alpha) - math.log(LEVELS)) - (log_y + log_1my).flatten(1).sum(1)
    return log_y - log_1my, logdet


def from_logit_space(z0: torch.Tensor, alpha: float) -> torch.Tensor:
    """The inverse, as intensities v = w / 256 in [0, 1] (clamped: a sample may land past the margin)."""
    return ((torch.sigmoid(z0) - alpha) / (1 - 2 * alpha)).clamp(0, 1)


# ---------------------------------------------------------------- the seed's flow: couplings on the flat image


def checkerboard_order(height: int, width: int) -> torch.Tensor:
    """A permutation of the flat pixels: the white squares of a checkerboard first, then the black ones.

    In this order the checkerboard mask and its complement are the two halves
    of the vector, so a coupling slices instead of multiplying by a mask: the
    same function as the masked form, with half the inputs and outputs.
    """
    pixels = range(height * width)
    white = [i for i in pixels if (i // width + i % width) % 2 == 0]
    black = [i for i in pixels if (i // width + i % width) % 2 == 1]
    return torch.tensor(white + black)


class MLPCoupling(nn.Module):
    """y_b = x_b * exp(s(x_a)) + t(x_a), y_a = x_a, with s = tanh(.) so no step scales by more than e."""

    def __init__(self, conditioner: int, transformed: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(conditioner, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, 2 * transformed),
        )  # fmt: skip
        # The last layer starts at zero: s = t = 0, each coupling the identity, the untrained flow
        # exactly its preprocessing (a closed form the tests check).
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def scale_shift(self, x_a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw_scale, shift = self.net(x_a).chunk(2, dim=1)
        return torch.tanh(raw_scale), shift

    def forward(self, x_a, x_b):
        log_scale, shift = self.scale_shift(x_a)
        return x_b * torch.exp(log_scale) + shift, log_scale.sum(1)

    def inverse(self, x_a, y_b):
        log_scale, shift = self.scale_shift(x_a)
        return (y_b - shift) * torch.exp(-log_scale)


class MLPFlow(nn.Module):
    """The seed's flow on (B, 784) logit-space vectors; couplings alternate which checkerboard half they change."""

    def __init__(self, config: FlowConfig):
        super().__init__()
        order = checkerboard_order(*IMAGE_SHAPE[1:])
        self.register_buffer("order", order, persistent=False)
        self.register_buffer("inverse_order", torch.argsort(order), persistent=False)
        self.half = PIXELS // 2
        self.couplings = nn.ModuleList(
            MLPCoupling(self.half, PIXELS - self.half, config.hidden)
            if index % 2 == 0
            else MLPCoupling(PIXELS - self.half, self.half, config.hidden)
            for index in range(config.couplings)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x[:, self.order]  # a permutation: log-determinant 0
        a, b = x[:, : self.half], x[:, self.half :]
        logdet = x.new_zeros(len(x))
        for index, coupling in enumerate(self.couplings):
            if index % 2 == 0:
                b, step = coupling(a, b)
            else:
                a, step = coupling(b, a)
            logdet = logdet + step
        return torch.cat([a, b], 1)[:, self.inverse_order], logdet

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        z = z[:, self.order]
        a, b = z[:, : self.half], z[:, self.half :]
        for index in reversed(range(len(self.couplings))):
            if index % 2 == 0:
                b = self.couplings[index].inverse(a, b)
            else:
                a = self.couplings[index].inverse(b, a)
        return torch.cat([a, b], 1)[:, self.inverse_order]


# ---------------------------------------------------------------- the multi-scale flow: layers on (B, C, H, W)


def squeeze(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 4C, H/2, W/2): each 2x2 patch becomes four channels (a permutation)."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, 4 * c, h // 2, w // 2)


def unsqueeze(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.view(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c // 4, 2 * h, 2 * w)


def channel_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (unbiased) standard deviation of (B, C, H, W), keepdim.

    Under torchrun they are those of the global batch (two all-reduces, once per layer at the first
    step), so every process starts its actnorm layers where a single process would.
    """
    dims = (0, 2, 3)
    if not (distributed.is_available() and distributed.is_initialized() and distributed.get_world_size() > 1):
        return x.mean(dim=dims, keepdim=True), x.std(dim=dims, keepdim=True)
    totals = torch.cat([x.sum(dim=dims, keepdim=True), torch.full_like(x[:1, :, :1, :1], x[:, :1].numel())])
    distributed.all_reduce(totals)
    mean = totals[:1] / totals[1:]
    squares = (x - mean).square().sum(dim=dims, keepdim=True)
    distributed.all_reduce(squares)
    return mean, (squares / (totals[1:] - 1)).sqrt()


class ActNorm(nn.Module):
    """y = (x + bias) * exp(log_scale) per channel, set from the first training batch to zero mean and unit variance.

    Unlike batch normalisation it is the same function in training and
    evaluation, so the density of an image does not depend on its batch.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.uint8))

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        mean, std = channel_moments(x)
        self.bias.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + 1e-6))
        self.initialized.fill_(1)

    def forward(self, x):
        if self.training and not self.initialized:
            self.initialize(x)
        h, w = x.shape[2:]
        return (x + self.bias) * torch.exp(self.log_scale), self.log_scale.sum().expand(len(x)) * (h * w)

    def inverse(self, y):
        return y * torch.exp(-self.log_scale) - self.bias


class InvertibleConv1x1(nn.Module):
    """A learned channel mixing (Glow): y = W x at every pixel, log-determinant H W log|det W|."""

    def __init__(self, channels: int):
        super().__init__()
        # A random rotation: invertible, log-determinant 0 at the start.
        self.weight = nn.Parameter(torch.linalg.qr(torch.randn(channels, channels))[0])

    def forward(self, x):
        h, w = x.shape[2:]
        logdet = torch.linalg.slogdet(self.weight)[1] * (h * w)
        return F.conv2d(x, self.weight[:, :, None, None]), logdet.expand(len(x))

    def inverse(self, y):
        return F.conv2d(y, torch.linalg.inv(self.weight)[:, :, None, None])


def conv_net(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    """3x3 -> ReLU -> 1x1 -> ReLU -> 3x3 with the last layer at zero (an identity coupling at the start)."""
    net = nn.Sequential(
        nn.Conv2d(inputs, hidden, 3, padding=1), nn.ReLU(),
        nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
        nn.Conv2d(hidden, outputs, 3, padding=1),
    )  # fmt: skip
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    return net


class ConvCoupling(nn.Module):
    """Affine coupling on channels: the second half is scaled and shifted by a conv net of the first."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.split = channels // 2
        self.net = conv_net(self.split, hidden, 2 * (channels - self.split))

    def scale_shift(self, x_a):
        raw_scale, shift = self.net(x_a).chunk(2, dim=1)
        return torch.tanh(raw_scale), shift

    def forward(self, x):
        x_a, x_b = x[:, : self.split], x[:, self.split :]
        log_scale, shift = self.scale_shift(x_a)
        return torch.cat([x_a, x_b * torch.exp(log_scale) + shift], 1), log_scale.flatten(1).sum(1)

    def inverse(self, y):
        y_a, y_b = y[:, : self.split], y[:, self.split :]
        log_scale, shift = self.scale_shift(y_a)
        return torch.cat([y_a, (y_b - shift) * torch.exp(-log_scale)], 1)


class FlowStep(nn.Module):
    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.layers = nn.ModuleList([ActNorm(channels), InvertibleConv1x1(channels), ConvCoupling(channels, hidden)])

    def forward(self, x):
        logdet = x.new_zeros(len(x))
        for layer in self.layers:
            x, step = layer(x)
            logdet = logdet + step
        return x, logdet

    def inverse(self, y):
        for layer in reversed(self.layers):
            y = layer.inverse(y)
        return y


class SplitPrior(nn.Module):
    """Factor out half the channels: eps = (x_out - mean(x_kept)) / exp(log_scale(x_kept)).

    Written as one more invertible layer onto a standard normal, so the whole
    flow is a single bijection (B, 784) -> (B, 784) with one log-determinant.
    """

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.kept = channels // 2
        self.net = conv_net(self.kept, hidden, 2 * (channels - self.kept))

    def forward(self, x):
        kept, out = x[:, : self.kept], x[:, self.kept :]
        mean, log_scale = self.net(kept).chunk(2, dim=1)
        return kept, (out - mean) * torch.exp(-log_scale), -log_scale.flatten(1).sum(1)

    def inverse(self, kept, eps):
        mean, log_scale = self.net(kept).chunk(2, dim=1)
        return torch.cat([kept, mean + eps * torch.exp(log_scale)], 1)


class MultiScaleFlow(nn.Module):
    """1x28x28 -> squeeze -> 4x14x14, K steps, factor out 2x14x14 -> squeeze -> 8x7x7, K steps."""

    def __init__(self, config: FlowConfig):
        super().__init__()
        self.scale1 = nn.ModuleList(FlowStep(4, config.channels) for _ in range(config.steps))
        self.split = SplitPrior(4, config.channels)
        self.scale2 = nn.ModuleList(FlowStep(8, config.channels) for _ in range(config.steps))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = squeeze(x.view(-1, *IMAGE_SHAPE))
        logdet = x.new_zeros(len(x))
        for step in self.scale1:
            h, change = step(h)
            logdet = logdet + change
        h, eps1, change = self.split(h)
        logdet = logdet + change
        h = squeeze(h)
        for step in self.scale2:
            h, change = step(h)
            logdet = logdet + change
        return torch.cat([eps1.flatten(1), h.flatten(1)], 1), logdet

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        factored = PIXELS // 2
        eps1 = z[:, :factored].reshape(-1, 2, 14, 14)
        h = z[:, factored:].reshape(-1, 8, 7, 7)
        for step in reversed(self.scale2):
            h = step.inverse(h)
        h = self.split.inverse(unsqueeze(h), eps1)
        for step in reversed(self.scale1):
            h = step.inverse(h)
        return unsqueeze(h).flatten(1)


BODIES = {"realnvp-mlp": MLPFlow, "realnvp-ms": MultiScaleFlow}


# ---------------------------------------------------------------- the model


class Flow(GenerativeModel):
    capabilities = frozenset({"sample", "latent", "encoder", "exact_likelihood"})
    monitor = ("bpd", "min")
    headline_metrics = ("bpd",)
    reference_lines = {"bpd": (1.83, "seed report")}
    reduced_precision = False  # a log-likelihood sums ~800 log-scales per layer: bf16 rounding would swamp it

    def __init__(self, config: FlowConfig):
        super().__init__(config)
        self.body = BODIES[config.arch](config)

    @property
    def latent_dim(self) -> int:
        return PIXELS

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [adam(self.parameters(), lr=self.config.lr)]

    def learning_rate_factor(self, progress: float) -> float:
        if self.config.lr_schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    # ------------------------------------------------------------ densities

    def forward_with_logdet(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Dequantised pixels w in [0, 256), (B, 784) -> (latents (B, 784), log|det dz/dw| per image)."""
        z0, preprocessing = to_logit_space(w, self.config.alpha)
        z, learned = self.body(z0)
        return z, preprocessing + learned

    def log_density(self, w: torch.Tensor) -> torch.Tensor:
        """log p(w) in nats per image, for w in [0, 256)^784 (B, 784)."""
        z, logdet = self.forward_with_logdet(w)
        return standard_normal_log_density(z) + logdet

    def dequantize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 images (B, 28, 28) -> x + u with u ~ U[0, 1), flat (B, 784), in the model's precision."""
        x = batch.flatten(1).to(next(self.parameters()).dtype)
        return x + self.batch_noise(lambda rows: torch.rand(rows, PIXELS, dtype=x.dtype, device=x.device), len(x))

    def bits_per_dim(self, batch: torch.Tensor) -> torch.Tensor:
        """-log2 p(x + u) / 784 per image: a stochastic upper bound on -log2 P(x) / 784."""
        return -self.log_density(self.dequantize(batch)) / (PIXELS * math.log(2))

    def training_step(self, batch, labels=None):
        bpd = self.bits_per_dim(batch).mean()
        return {"loss": bpd, "bpd": bpd.detach()}

    def validation_step(self, batch, labels=None):
        return {"bpd": self.bits_per_dim(batch).mean()}

    def log_weights(self, batch: torch.Tensor, k: int, *, proposal: str) -> torch.Tensor:
        """log p(x + u_i) for k dequantisation draws u_i ~ U[0, 1)^784 per image: (B, k).

        With the uniform as the proposal over the unit cube at x, these are the
        importance weights of P(x) = E_u p(x + u): their mean log is the usual
        dequantised bound and the log of their mean a tighter one.
        """
        if proposal != "dequantization":
            raise ValueError(f"a flow has only the dequantization proposal, not {proposal!r}")
        repeated = batch.flatten(1).repeat_interleave(k, dim=0)
        return self.log_density(self.dequantize(repeated)).view(len(batch), k)

    # ------------------------------------------------------------ latents and samples

    def encode_images(self, batch: torch.Tensor) -> torch.Tensor:
        """The latent of each image's pixel centres (x + 1/2): deterministic, so interpolation ends on the images."""
        return self.forward_with_logdet(batch.flatten(1).to(next(self.parameters()).dtype) + 0.5)[0]

    def decode_images(self, z: torch.Tensor) -> torch.Tensor:
        return from_logit_space(self.body.inverse(z), self.config.alpha).view(-1, *IMAGE_SHAPE)

    def sample(self, n, *, generator=None, averaged=True, temperature=1.0):
        z = temperature * torch.randn(n, PIXELS, generator=generator)
        return self.decode_images(z.to(self.device))


register(ModelSpec(name="flow", config_class=FlowConfig, module_class=Flow, description="RealNVP normalizing flow (seed report section 3)"))
