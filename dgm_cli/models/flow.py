"""The normalizing flows: the seed report's (section 3), a convolutional checkerboard flow and a multi-scale one.

A flow is an invertible map f from an image to a standard-normal latent of the
same size, so the change-of-variables formula gives an exact density:
    log p(w) = log N(f(w); 0, I) + log |det df/dw|.

The data are 8-bit integers x in {0..255}^784. Training sees w = x + u with
u drawn from a dequantization distribution q(u|x) on [0, 1)^784 (uniform, or a
learned flow: models/dequantization.py); a density p(w) on [0, 256)^784
bounds the probability of the discrete image from below,
    log P(x) = log E_q[p(x + u) / q(u|x)] >= E_q[log p(x + u) - log q(u|x)],
so -(log2 p(w) - log2 q(u|x)) / 784 is the bits/dim figure published MNIST results quote.
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
  realnvp-conv checkerboard couplings on the 1x28x28 image whose networks are
               convolutional (gated residual blocks by default): each sees the
               pixels of one colour of the board as an image.
  realnvp-ms   multi-scale (RealNVP / Glow): optionally a few checkerboard
               couplings on the 1x28x28 image, then squeeze to 4x14x14, K steps
               of (actnorm, invertible 1x1 convolution, affine channel coupling
               with a conv net), factor out half the channels under a Gaussian
               whose mean and scale are predicted from the other half, squeeze
               to 8x7x7, K' more steps.

Every layer (models/flow_layers.py) maps x -> (y, log|det dy/dx| per image) and has an exact inverse.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn

from dgm_cli.config import check, classes_option, minutes_option, option
from dgm_cli.data import IMAGE_SHAPE, PIXELS
from dgm_cli.models.base import GenerativeModel, adam
from dgm_cli.models.conditioning import ClassConditionalGaussian, label_maps, one_hot
from dgm_cli.models.coupling_nets import COUPLING_NETS
from dgm_cli.models.dequantization import DEQUANTIZATIONS, make_dequantization
from dgm_cli.models.flow_layers import (
    CheckerboardCoupling,
    FlowStep,
    SplitPrior,
    run_forward,
    run_inverse,
    squeeze,
    unsqueeze,
    with_context,
)
from dgm_cli.models.schedules import learning_rate_factor
from dgm_cli.registry import ModelSpec, Preset, register, searched_budgets

ARCHITECTURES = ("realnvp-mlp", "realnvp-conv", "realnvp-ms")
FLOW_SCHEDULES = ("constant", "cosine", "exponential")
CONDITIONINGS = ("prior", "couplings")
LEVELS = 256  # 8-bit pixels
LOG_2PI = math.log(2 * math.pi)


# The same course as the seed assignment later published small convolutional flows for MNIST with their test
# bits/dim (8 importance samples over the dequantization); 200 epochs, batch 128, Adam 1e-3 decayed by 0.99 per
# epoch. Each preset below is one of them in dgm's layers.
TUTORIAL = "Lippe, UvA Deep Learning course, tutorial 11 'Normalizing flows for image modeling' (2022)"
FLOW_METRIC = "test bits/dim, importance-weighted over 8 dequantization draws"
FLOW_PROTOCOL = {
    "estimate": "importance_weighted",
    "dataset": "mnist",
    "split": "test",
    "samples": 8,
    "value": "bits_per_dim",
}
TUTORIAL_TRAINING = {
    "epochs": 200,
    "batch_size": 128,
    "lr": 1e-3,
    "lr_schedule": "exponential",
    "lr_decay": 0.99,
    "coupling_net": "gated",
    "gated_blocks": 3,
    "sample_epochs": (0, 1, 10, 50, 200),
}
TUTORIAL_CHECKERBOARD = {"arch": "realnvp-conv", "couplings": 8, "checkerboard_channels": 32}
TUTORIAL_VARDEQ = {"dequantization": "variational", "dequantization_steps": 4, "dequantization_channels": 16}
TUTORIAL_MULTISCALE = {
    "arch": "realnvp-ms",
    "checkerboard_steps": 2,
    "checkerboard_channels": 32,
    "steps": 2,
    "channels": 48,
    "final_steps": 4,
    "final_channels": 64,
}
MULTISCALE_DEPARTURES = (
    "each channel coupling is a Glow step (actnorm and an invertible 1x1 convolution before it, "
    "instead of alternating fixed halves), and the factored-out half has Glow's learned "
    "Gaussian prior instead of a standard normal"
)


def tutorial_preset(name: str, description: str, overrides: dict, published: float, departures: str = "") -> Preset:
    return Preset(
        name,
        description,
        {**TUTORIAL_TRAINING, **overrides},
        published,
        FLOW_METRIC,
        TUTORIAL,
        FLOW_PROTOCOL,
        departures,
    )


PRESETS = {
    preset.name: preset
    for preset in (
        tutorial_preset(
            "tutorial-checkerboard",
            "8 checkerboard couplings, gated conv nets, uniform dequantization",
            TUTORIAL_CHECKERBOARD,
            1.078,
        ),
        tutorial_preset(
            "tutorial-vardeq",
            "the same with variational dequantization",
            {**TUTORIAL_CHECKERBOARD, **TUTORIAL_VARDEQ},
            1.043,
        ),
        tutorial_preset(
            "tutorial-multiscale",
            "multi-scale: 2 checkerboard couplings, squeeze, 2 steps, split, "
            "squeeze, 4 steps; variational dequantization",
            {**TUTORIAL_MULTISCALE, **TUTORIAL_VARDEQ},
            1.020,
            MULTISCALE_DEPARTURES,
        ),
    )
}


@dataclass(frozen=True)
class FlowConfig:
    preset: str = option(
        "none",
        "A published configuration (dgm presets lists them with their numbers); options given beside it still apply.",
        choices=("none", *PRESETS),
    )
    arch: str = option(
        "realnvp-mlp",
        "realnvp-mlp: the seed's 8 checkerboard couplings on the flat image; realnvp-conv: checkerboard couplings "
        "on the image with convolutional networks; realnvp-ms: multi-scale convolutional flow (squeeze, actnorm, "
        "1x1 convolutions, factor-out).",
        choices=ARCHITECTURES,
    )
    couplings: int = option(8, "realnvp-mlp and realnvp-conv: affine coupling layers.", min=1, max=64)
    hidden: int = option(1024, "realnvp-mlp: hidden units of each coupling network.", min=1, max=16384)
    checkerboard_steps: int = option(
        0, "realnvp-ms: checkerboard couplings on the 1x28x28 image before the first squeeze.", min=0, max=64
    )
    checkerboard_channels: int = option(
        32,
        "realnvp-conv, and realnvp-ms's --checkerboard-steps: hidden channels of the coupling networks on "
        "the 28x28 image.",
        min=1,
        max=1024,
    )
    steps: int = option(8, "realnvp-ms: flow steps at 4x14x14 (and at 8x7x7 unless --final-steps).", min=1, max=64)
    channels: int = option(
        64,
        "realnvp-ms: hidden channels of the coupling networks at 4x14x14 (and at 8x7x7 unless "
        "--final-channels) and of the split prior.",
        min=1,
        max=1024,
    )
    final_steps: int = option(0, "realnvp-ms: flow steps at 8x7x7 (0: as many as --steps).", min=0, max=64)
    final_channels: int = option(
        0, "realnvp-ms: hidden channels of the coupling networks at 8x7x7 (0: as --channels).", min=0, max=1024
    )
    coupling_net: str = option(
        "simple",
        "Convolutional coupling networks: simple (3x3 conv, ReLU, 1x1 conv, ReLU, 3x3 conv; log-scales bounded "
        "by tanh) or gated (Flow++'s gated residual blocks with layer norm; a learned bound on the log-scales).",
        choices=COUPLING_NETS,
    )
    gated_blocks: int = option(3, "Gated residual blocks in each gated coupling network.", min=1, max=16)
    dequantization: str = option(
        "uniform",
        "uniform: u ~ U[0, 1) added to each pixel; variational: u drawn from a flow conditioned on the image "
        "(Flow++), trained with the model, whose density enters the bound.",
        choices=DEQUANTIZATIONS,
    )
    dequantization_steps: int = option(
        4, "variational dequantization: checkerboard couplings of its flow.", min=1, max=32
    )
    dequantization_channels: int = option(
        16, "variational dequantization: hidden channels of its coupling networks.", min=1, max=1024
    )
    alpha: float = option(1e-5, "Margin of the logit transform: logit(alpha + (1 - 2 alpha) v).", min=1e-12, max=0.1)
    epochs: int = option(40, "Passes over the training split.", min=0, max=100_000)
    minutes: float = minutes_option()
    batch_size: int = option(128, "Images per optimizer step.", min=1, max=65_536)
    lr: float = option(1e-3, "Adam learning rate.", min=1e-8, max=10.0)
    lr_schedule: str = option(
        "constant",
        "constant (the seed's); cosine: decay the learning rate to zero along a half cosine over the run; "
        "exponential: multiply it by --lr-decay after every epoch.",
        choices=FLOW_SCHEDULES,
    )
    lr_decay: float = option(0.99, "exponential schedule: the learning rate's factor per epoch.", min=0.5, max=1.0)
    max_grad_norm: float = option(
        10.0,
        "Clip the gradient's global norm to this before each step (0 = no clipping). The default caps the rare "
        "outlier steps that can make the MLP flow diverge and leaves ordinary steps alone.",
        min=0.0,
        max=1e6,
    )
    conditional: bool = option(
        False,
        "Learn p(x|y) for the class labels: a per-class mean and scale of every latent dimension (and, "
        "with --conditioning couplings, the label as an input of every coupling network).",
    )
    conditioning: str = option(
        "couplings",
        "--conditional: where the label acts. prior: only the per-class mean and scale of the latent; couplings: "
        "also the one-hot label as an input of every coupling network and of the split prior, so the whole map "
        "depends on the class (it draws the asked-for class far more often, at about the same cost per step).",
        choices=CONDITIONINGS,
        earlier="prior",
    )
    classes: int = classes_option()
    sample_epochs: tuple[int, ...] = option(
        (0, 1, 10, 20, 40),
        "Epochs after which a sample grid is saved; 0 = before training, later ones are clipped to the run's "
        "last epoch.",
        min=0,
    )

    def __post_init__(self):
        check(self)

    def inapplicable_fields(self) -> dict[str, str]:
        """Fields this configuration does not use, each with what it belongs to: given on the command line,
        the CLI refuses them rather than store a setting that changes nothing."""
        per_arch = {
            "realnvp-mlp": ("couplings", "hidden"),
            "realnvp-conv": ("couplings", "checkerboard_channels", "coupling_net", "gated_blocks"),
            "realnvp-ms": (
                "checkerboard_steps",
                "checkerboard_channels",
                "steps",
                "channels",
                "final_steps",
                "final_channels",
                "coupling_net",
                "gated_blocks",
            ),
        }
        owners = {
            name: [arch for arch, names in per_arch.items() if name in names]
            for names in per_arch.values()
            for name in names
        }
        unused = {name: f"--arch {' or '.join(archs)}" for name, archs in owners.items() if self.arch not in archs}
        if self.dequantization == "variational":
            unused.pop("gated_blocks", None)  # the dequantization flow's networks are gated too
        else:
            unused |= {
                name: "--dequantization variational" for name in ("dequantization_steps", "dequantization_channels")
            }
        if (
            "gated_blocks" not in unused
            and self.arch != "realnvp-mlp"
            and self.coupling_net != "gated"
            and self.dequantization != "variational"
        ):
            unused["gated_blocks"] = "--coupling-net gated or --dequantization variational"
        if self.lr_schedule != "exponential":
            unused["lr_decay"] = "--lr-schedule exponential"
        if not self.conditional:
            unused["conditioning"] = "--conditional"
        return unused


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
    """y_b = x_b * exp(s(x_a)) + t(x_a), y_a = x_a, with s = tanh(.) so no step scales by more than e.

    `context` extra inputs (a one-hot label) join x_a as the network's input; they are not transformed.
    """

    def __init__(self, conditioner: int, transformed: int, hidden: int, context: int = 0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(conditioner + context, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 2 * transformed),
        )
        # The last layer starts at zero: s = t = 0, each coupling the identity, the untrained flow
        # exactly its preprocessing (a closed form the tests check).
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def scale_shift(self, x_a: torch.Tensor, code: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        raw_scale, shift = self.net(with_context(x_a, code)).chunk(2, dim=1)
        return torch.tanh(raw_scale), shift

    def forward(self, x_a, x_b, code=None):
        log_scale, shift = self.scale_shift(x_a, code)
        return x_b * torch.exp(log_scale) + shift, log_scale.sum(1)

    def inverse(self, x_a, y_b, code=None):
        log_scale, shift = self.scale_shift(x_a, code)
        return (y_b - shift) * torch.exp(-log_scale)


def label_inputs(config: FlowConfig) -> int:
    """How many label inputs each coupling network gets: the classes' one-hot code, or none."""
    return config.classes if config.conditional and config.conditioning == "couplings" else 0


class MLPFlow(nn.Module):
    """The seed's flow on (B, 784) logit-space vectors; couplings alternate which checkerboard half they change.

    Its forward and inverse take the one-hot label code (B, C) of a flow conditioned in its couplings, else None.
    """

    def __init__(self, config: FlowConfig):
        super().__init__()
        order = checkerboard_order(*IMAGE_SHAPE[1:])
        self.register_buffer("order", order, persistent=False)
        self.register_buffer("inverse_order", torch.argsort(order), persistent=False)
        self.half = PIXELS // 2
        labels = label_inputs(config)
        self.couplings = nn.ModuleList(
            MLPCoupling(self.half, PIXELS - self.half, config.hidden, labels)
            if index % 2 == 0
            else MLPCoupling(PIXELS - self.half, self.half, config.hidden, labels)
            for index in range(config.couplings)
        )

    def forward(self, x: torch.Tensor, code: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x = x[:, self.order]  # a permutation: log-determinant 0
        a, b = x[:, : self.half], x[:, self.half :]
        logdet = x.new_zeros(len(x))
        for index, coupling in enumerate(self.couplings):
            if index % 2 == 0:
                b, step = coupling(a, b, code)
            else:
                a, step = coupling(b, a, code)
            logdet = logdet + step
        return torch.cat([a, b], 1)[:, self.inverse_order], logdet

    def inverse(self, z: torch.Tensor, code: torch.Tensor | None = None) -> torch.Tensor:
        z = z[:, self.order]
        a, b = z[:, : self.half], z[:, self.half :]
        for index in reversed(range(len(self.couplings))):
            if index % 2 == 0:
                b = self.couplings[index].inverse(a, b, code)
            else:
                a = self.couplings[index].inverse(b, a, code)
        return torch.cat([a, b], 1)[:, self.inverse_order]


class CheckerboardFlow(nn.Module):
    """Checkerboard couplings on the (B, 1, 28, 28) image, alternating which colour of the board they change."""

    def __init__(self, config: FlowConfig):
        super().__init__()
        self.couplings = checkerboard_couplings(config.couplings, config)

    def forward(self, x: torch.Tensor, code: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.view(-1, *IMAGE_SHAPE)
        h, logdet = run_forward(self.couplings, x, label_maps(code, x))
        return h.flatten(1), logdet

    def inverse(self, z: torch.Tensor, code: torch.Tensor | None = None) -> torch.Tensor:
        z = z.view(-1, *IMAGE_SHAPE)
        return run_inverse(self.couplings, z, label_maps(code, z)).flatten(1)


def checkerboard_couplings(count: int, config: FlowConfig) -> nn.ModuleList:
    return nn.ModuleList(
        CheckerboardCoupling(
            1,
            config.checkerboard_channels,
            parity=index % 2,
            net=config.coupling_net,
            blocks=config.gated_blocks,
            context=label_inputs(config),
        )
        for index in range(count)
    )


class MultiScaleFlow(nn.Module):
    """1x28x28 [-> checkerboard couplings] -> squeeze -> 4x14x14, K steps, factor out 2x14x14 -> squeeze
    -> 8x7x7, K' steps."""

    def __init__(self, config: FlowConfig):
        super().__init__()
        net = {"net": config.coupling_net, "blocks": config.gated_blocks, "context": label_inputs(config)}
        final_channels = config.final_channels or config.channels
        self.full_resolution = checkerboard_couplings(config.checkerboard_steps, config)
        self.scale1 = nn.ModuleList(FlowStep(4, config.channels, **net) for _ in range(config.steps))
        self.split = SplitPrior(4, config.channels, context=label_inputs(config))
        self.scale2 = nn.ModuleList(
            FlowStep(8, final_channels, **net) for _ in range(config.final_steps or config.steps)
        )

    def forward(self, x: torch.Tensor, code: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = x.view(-1, *IMAGE_SHAPE)
        h, logdet = run_forward(self.full_resolution, h, label_maps(code, h))
        h = squeeze(h)
        scale1 = label_maps(code, h)
        h, change = run_forward(self.scale1, h, scale1)
        logdet = logdet + change
        h, eps1, change = self.split(h, scale1)
        logdet = logdet + change
        h = squeeze(h)
        h, change = run_forward(self.scale2, h, label_maps(code, h))
        return torch.cat([eps1.flatten(1), h.flatten(1)], 1), logdet + change

    def inverse(self, z: torch.Tensor, code: torch.Tensor | None = None) -> torch.Tensor:
        factored = PIXELS // 2
        eps1 = z[:, :factored].reshape(-1, 2, 14, 14)
        h = z[:, factored:].reshape(-1, 8, 7, 7)
        h = unsqueeze(run_inverse(self.scale2, h, label_maps(code, h)))
        scale1 = label_maps(code, eps1)
        h = unsqueeze(run_inverse(self.scale1, self.split.inverse(h, eps1, scale1), scale1))
        return run_inverse(self.full_resolution, h, label_maps(code, h)).flatten(1)


BODIES = {"realnvp-mlp": MLPFlow, "realnvp-conv": CheckerboardFlow, "realnvp-ms": MultiScaleFlow}


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
        self.dequantizer = make_dequantization(
            config.dequantization,
            steps=config.dequantization_steps,
            hidden=config.dequantization_channels,
            net="gated",
            blocks=config.gated_blocks,
        )
        # A conditional flow's latent of class y is N(mean_y, scale_y^2); its "latent" (what sampling
        # draws and interpolation walks in) is the standardized one, the same for every class.
        self.class_prior = ClassConditionalGaussian(self.classes, PIXELS) if self.classes else None
        # channels_last convolution weights: oneDNN then runs the coupling networks' convolutions, forward and
        # backward, in that layout, 8% faster a step of the tutorial-multiscale preset on one CPU thread
        # (benchmarks/flow_speed.py against its NAME-contiguous variants); the map and its checkpoints are the same.
        self.to(memory_format=torch.channels_last)

    @property
    def latent_dim(self) -> int:
        return PIXELS

    def label_code(self, labels: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
        """The one-hot labels (B, C) the coupling networks take, or None when they take no label."""
        return one_hot(labels, self.classes, like) if label_inputs(self.config) else None

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [adam(self.parameters(), lr=self.config.lr)]

    def learning_rate_factor(self, progress: float) -> float:
        return learning_rate_factor(
            self.config.lr_schedule, progress, epochs=self.config.epochs, decay=self.config.lr_decay
        )

    @property
    def dequantization_name(self) -> str:
        return {"uniform": "uniform dequantization", "variational": "variational dequantization q(u|x)"}[
            self.config.dequantization
        ]

    # ------------------------------------------------------------ densities

    def forward_with_logdet(
        self, w: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Dequantised pixels w in [0, 256), (B, 784) -> (standard-normal latents (B, 784), log|det dz/dw| per image);
        a conditional flow standardizes with the labels' class prior."""
        z0, preprocessing = to_logit_space(w, self.config.alpha)
        z, learned = self.body(z0, self.label_code(labels, z0))
        logdet = preprocessing + learned
        if self.class_prior is not None:
            z, change = self.class_prior.standardize(z, labels)
            logdet = logdet + change
        return z, logdet

    def log_density(self, w: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """log p(w) (log p(w|y) for a conditional flow) in nats per image, for w in [0, 256)^784 (B, 784)."""
        z, logdet = self.forward_with_logdet(w, labels)
        return standard_normal_log_density(z) + logdet

    def dequantize(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (B, 28, 28) -> (w = x + u flat (B, 784) in the model's precision, log q(u|x) per image).

        u ~ q(u|x), the model's dequantization distribution: uniform (log q = 0) or its learned flow.
        """
        x = batch.flatten(1).to(next(self.parameters()).dtype)
        r = self.batch_noise(lambda rows: torch.rand(rows, PIXELS, dtype=x.dtype, device=x.device), len(x))
        u, log_q = self.dequantizer(x, r)
        return x + u, log_q

    def log_weight(self, batch: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x + u) - log q(u|x) for one draw u ~ q(u|x) per image: an unbiased estimate of the bound."""
        w, log_q = self.dequantize(batch)
        return self.log_density(w, labels) - log_q

    def bits_per_dim(self, batch: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """-(log2 p(x + u) - log2 q(u|x)) / 784 per image: a stochastic upper bound on -log2 P(x) / 784."""
        return -self.log_weight(batch, labels) / (PIXELS * math.log(2))

    def training_step(self, batch, labels=None):
        bpd = self.bits_per_dim(batch, self.given_labels(labels)).mean()
        return {"loss": bpd, "bpd": bpd.detach()}

    def validation_step(self, batch, labels=None):
        return {"bpd": self.bits_per_dim(batch, self.given_labels(labels)).mean()}

    def log_weights(
        self, batch: torch.Tensor, k: int, *, proposal: str, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """log p(x + u_i) - log q(u_i|x) for k dequantisation draws u_i ~ q(u|x) per image: (B, k).

        With q (the uniform, or the learned q(u|x)) as the proposal over the unit cube at x, these
        are the importance weights of P(x) = E_q[p(x + u) / q(u|x)]: their mean log is the usual
        dequantised bound and the log of their mean a tighter one.
        """
        if proposal != "dequantization":
            raise ValueError(f"a flow has only the dequantization proposal, not {proposal!r}")
        labels = None if labels is None else labels.repeat_interleave(k, dim=0)
        return self.log_weight(batch.flatten(1).repeat_interleave(k, dim=0), labels).view(len(batch), k)

    # ------------------------------------------------------------ latents and samples

    def encode_images(self, batch: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The latent of each image's pixel centres (x + 1/2): deterministic, so interpolation ends on the images."""
        labels = self.sample_labels(len(batch), labels)
        return self.forward_with_logdet(batch.flatten(1).to(next(self.parameters()).dtype) + 0.5, labels)[0]

    def decode_images(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        labels = self.sample_labels(len(z), labels)  # checked: an unconditional flow refuses labels
        if self.class_prior is not None:
            z = self.class_prior.draw(z, labels)
        return from_logit_space(self.body.inverse(z, self.label_code(labels, z)), self.config.alpha).view(
            -1, *IMAGE_SHAPE
        )

    def draw(self, n, *, generator, averaged, temperature, labels):
        z = temperature * torch.randn(n, PIXELS, generator=generator)
        return self.decode_images(z.to(self.device), labels)


# The tutorial-multiscale preset's layers without its 200-epoch schedule (benchmarks/budget_search.py's grid).
TUTORIAL_MULTISCALE_NETWORK = {
    **TUTORIAL_MULTISCALE,
    "coupling_net": "gated",
    "gated_blocks": 3,
    "dequantization": "variational",
}

# What `--minutes M` trains with, where these fields are not given: the course tutorial's multi-scale network
# (the tutorial-multiscale preset's layers) at twice its learning rate, with the budget's schedule. In 15
# minutes on a core it takes one epoch, a seventh of the steps of the small realnvp-ms, and ends just ahead of
# it (the seed's MLP RealNVP ends far behind both); in 60 it takes four and ends further ahead. The best of
# benchmarks/budget_search.py's grid on the validation split at 15 minutes, and of its two finalists at 60
# (docs/performance.md): one entry per search, each for up to twice the budget it was searched at. Given
# --arch, none of it applies: it was searched as a whole.
BUDGET_NETWORK = {**TUTORIAL_MULTISCALE_NETWORK, "lr": 2e-3}
BUDGET_DEFAULTS = searched_budgets("flow", {15: BUDGET_NETWORK, 60: BUDGET_NETWORK}, unless_given=("arch",))

register(
    ModelSpec(
        name="flow",
        config_class=FlowConfig,
        module_class=Flow,
        description="normalizing flow: RealNVP couplings (MLP, convolutional or multi-scale), exact bits/dim",
        presets=PRESETS,
        budget_defaults=BUDGET_DEFAULTS,
    )
)
