"""The variational autoencoder of the seed report (section 1), and the IWAE paper's, on binarized pixels.

One stochastic layer (the seed's default): encoder x -> hidden -> (mean,
log-variance) of a diagonal Gaussian q(z|x); decoder z -> hidden -> Bernoulli
logits of p(x|z); prior N(0, I). Two stochastic layers (Burda et al. 2015):
the generative model p(z2) p(z1|z2) p(x|z1) with Gaussian p(z1|z2), and the
inference network q(z1|x) q(z2|z1). Each arrow is an MLP with
`hidden_layers` deterministic layers of `hidden` units (`hidden2` between z1
and z2) and tanh or ReLU units.

Training maximises, with `--objective elbo`, the ELBO
    log p(x|z) - KL(q(z|x) || p(z)),   z = mean + sigma * eps,
with the KL in closed form for one stochastic layer (as the seed) and as
log q - log p of the same draws for two; with `--objective iwae`, the
k-sample importance-weighted bound log (1/k) sum_i p(x, z_i) / q(z_i|x)
(Burda et al.), drawn in one batched pass, which at k = 1 is the one-draw
ELBO. Every number is in nats per image.
"""

import contextlib
import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dgm_cli.config import check, classes_option, minutes_option, option
from dgm_cli.data import IMAGE_SHAPE, PIXELS
from dgm_cli.errors import DgmError
from dgm_cli.models.base import GenerativeModel, adam, update_average
from dgm_cli.models.conditioning import with_label
from dgm_cli.models.schedules import SCHEDULES, learning_rate_factor
from dgm_cli.registry import ModelSpec, Preset, register, searched_budgets

LOG_2PI = math.log(2 * math.pi)
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}

# Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders" (2015), table 1: test NLL on dynamically
# binarized MNIST, importance-weighted with k = 5,000. Their training: batch 20, Adam (beta1 0.9, beta2 0.999,
# epsilon 1e-4 in the paper's text; its code, yburda/iwae, has beta1 0.99, starts the second moments at 1 and
# steps on the batch's summed gradient), 3,280 epochs in 8 stages of 3^i epochs at 1e-3 * 10^(-i/7), on the
# first 59,600 training images; Glorot-uniform weights and the decoder's output bias at the logit of the mean
# training image (init "paper": without that bias the tanh models of rows 4-5 stall, docs/vae.md).
IWAE_PAPER = "Burda, Grosse & Salakhutdinov 2015 (arXiv:1509.00519), table 1"
IWAE_METRIC = "test NLL (nats), importance-weighted k=5000"
IWAE_PROTOCOL = {
    "estimate": "importance_weighted",
    "dataset": "mnist",
    "split": "test",
    "samples": 5000,
    "value": "nll_nats",
}
ONE_LAYER = {"stochastic_layers": 1, "hidden_layers": 2, "hidden": 200, "zdim": 50, "activation": "tanh"}
TWO_LAYERS = {
    "stochastic_layers": 2,
    "hidden_layers": 2,
    "hidden": 200,
    "zdim": 100,
    "hidden2": 100,
    "zdim2": 50,
    "activation": "tanh",
}
# The paper's optimizer and schedule shape; the batch is 5 times the paper's and the schedule is stretched over
# fewer epochs, so that a row trains in about an hour on a 2-core CPU (docs/vae.md measures what that costs).
IWAE_TRAINING = {
    "lr": 1e-3,
    "adam_eps": 1e-4,
    "lr_schedule": "iwae",
    "batch_size": 100,
    "binarize": "dynamic",
    "init": "paper",
    "ema": 0.9995,
}
DEPARTURES = (
    "batch 100 instead of 20 and the paper's 8-stage schedule stretched over {epochs} epochs instead of "
    "3,280, to fit a CPU; dgm's split of the training file (50,000 / 10,000; --val-size 400 gives the "
    "paper's 59,600 / 400); Adam as the paper's text gives it (beta1 0.9, moments from zero, the "
    "batch's mean gradient), not as its code has it; a moving average of the weights (--ema 0.9995) is "
    "what is evaluated"
)


def iwae_preset(name: str, description: str, architecture: dict, objective: str, k: int, epochs: int, published: float):
    overrides = {
        **architecture,
        **IWAE_TRAINING,
        "objective": objective,
        "k": k,
        "epochs": epochs,
        "sample_epochs": (0, epochs),
    }
    departures = DEPARTURES.format(epochs=epochs)
    return Preset(name, description, overrides, published, IWAE_METRIC, IWAE_PAPER, IWAE_PROTOCOL, departures)


PRESETS = {
    preset.name: preset
    for preset in (
        iwae_preset(
            "iwae-1l-vae", "row 1: one stochastic layer (784-200-200-50, tanh), VAE", ONE_LAYER, "elbo", 1, 1800, 86.76
        ),
        iwae_preset("iwae-1l-k5", "row 2: one stochastic layer, IWAE k=5", ONE_LAYER, "iwae", 5, 900, 85.54),
        iwae_preset("iwae-1l-k50", "row 3: one stochastic layer, IWAE k=50", ONE_LAYER, "iwae", 50, 1800, 84.78),
        iwae_preset(
            "iwae-2l-vae",
            "row 4: two stochastic layers (784-200-200-100-100-50), VAE",
            TWO_LAYERS,
            "elbo",
            1,
            1800,
            85.33,
        ),
        iwae_preset("iwae-2l-k50", "row 5: two stochastic layers, IWAE k=50", TWO_LAYERS, "iwae", 50, 1800, 82.90),
    )
}


@dataclass(frozen=True)
class VAEConfig:
    preset: str = option(
        "none",
        "A published configuration (dgm presets lists them with their numbers); options given beside it still apply.",
        choices=("none", *PRESETS),
    )
    zdim: int = option(
        20,
        "Latent dimensions of z (with 2 stochastic layers: of z1, next to the pixels); 2 gives the drawable manifold.",
        min=1,
        max=1024,
    )
    hidden: int = option(
        500, "Units of each deterministic hidden layer between the pixels and z (z1).", min=1, max=16384
    )
    hidden_layers: int = option(
        1, "Deterministic hidden layers in each network (every encoder and decoder).", min=1, max=8
    )
    activation: str = option("relu", "Hidden units' nonlinearity.", choices=tuple(ACTIVATIONS))
    stochastic_layers: int = option(
        1, "1: z -> x; 2: the hierarchical model z2 -> z1 -> x of the IWAE paper.", min=1, max=2
    )
    zdim2: int = option(50, "With 2 stochastic layers: dimensions of z2, the top latent.", min=1, max=1024)
    hidden2: int = option(
        100, "With 2 stochastic layers: units of each hidden layer between z1 and z2.", min=1, max=16384
    )
    objective: str = option(
        "elbo",
        "Training bound: 'elbo', or 'iwae', the k-sample importance-weighted bound (Burda et al.).",
        choices=("elbo", "iwae"),
    )
    k: int = option(1, "Samples per image of the IWAE bound (with --objective iwae).", min=1, max=5000)
    binarize: str = option(
        "dynamic",
        "Training pixels: 'dynamic' draws fresh binary images from the intensities every epoch, "
        "'static' draws them once (seeded).",
        choices=("dynamic", "static"),
    )
    epochs: int = option(40, "Passes over the training split.", min=0, max=100_000)
    minutes: float = minutes_option()
    batch_size: int = option(128, "Images per optimizer step.", min=1, max=65_536)
    lr: float = option(1e-3, "Adam learning rate (the schedule's starting rate).", min=1e-8, max=10.0)
    lr_schedule: str = option(
        "constant",
        "Learning-rate schedule: constant, cosine, or iwae (the paper's 8 stages of 3^i epochs at 10^(-i/7) of "
        "--lr, stretched over --epochs).",
        choices=SCHEDULES,
    )
    adam_eps: float = option(1e-8, "Adam's epsilon (the IWAE paper used 1e-4).", min=1e-12, max=1.0)
    init: str = option(
        "pytorch",
        "Initial weights: 'pytorch' (PyTorch's defaults, the decoder's output layer at zero: the untrained model "
        "is the uniform Bernoulli), 'glorot' (Glorot-uniform weights, zero biases) or 'paper' (the IWAE paper's "
        "code: 'glorot' with the decoder's output bias at the logit of the mean training image).",
        choices=("pytorch", "glorot", "paper"),
    )
    adam_beta1: float = option(
        0.9,
        "Adam's beta1, the decay of its running mean of gradients (the IWAE paper's code used 0.99).",
        min=0.0,
        max=0.9999,
    )
    ema: float = option(
        0.0,
        "Decay of an exponential moving average of the weights (0 = off; 0.999 is typical): validation, "
        "dgm eval, sample and the other commands use the average, training steps the live weights; warmed up "
        "as min(ema, (1 + t) / (10 + t)) at step t.",
        min=0.0,
        max=0.99999,
    )
    conditional: bool = option(
        False, "Learn p(x|y) for the class labels: q(z|x,y) and p(x|z,y) (one stochastic layer)."
    )
    classes: int = classes_option()
    sample_epochs: tuple[int, ...] = option(
        (0, 10, 20, 30, 40),
        "Epochs after which sample grids (and the 2-D manifold) are saved; 0 = before training, "
        "later ones are clipped to the run's last epoch.",
        min=0,
    )

    def __post_init__(self):
        check(self)
        if self.conditional and self.stochastic_layers == 2:
            raise DgmError(
                "--conditional is for one stochastic layer; leave out --stochastic-layers 2 (or --conditional)"
            )

    def inapplicable_fields(self) -> dict[str, str]:
        """Fields this configuration does not use, with what they belong to (the CLI refuses them when given)."""
        if self.stochastic_layers == 1:
            return {"zdim2": "--stochastic-layers 2", "hidden2": "--stochastic-layers 2"}
        return {}


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) summed over the last dimension.

    expm1(logvar) - logvar equals sigma^2 - 1 - log sigma^2 without the
    cancellation that loses all precision when sigma is close to 1.
    """
    return 0.5 * (mean.square() + torch.expm1(logvar) - logvar).sum(-1)


def softplus_values(logits: torch.Tensor) -> torch.Tensor:
    """softplus(l) = log(1 + e^l) = max(l, 0) + log(1 + e^-|l|), computed without log1p, and without a gradient.

    Why not F.softplus: PyTorch's AVX-512 CPU kernels of log1p, softplus and log-sigmoid (and so the
    cross-entropy with logits) can be several times slower than exp or log (benchmarks/softplus_speed.py
    measures it; docs/performance.md). Here e^-|l| is in (0, 1], so 1 + e^-|l| loses at most half an ulp of 1
    (6e-8) to rounding, and the float32 result stays within 1.2e-7 of the exact value (relative to it
    above 1; F.softplus: 8e-8), about an ulp (tests/test_vae.py).
    """
    return logits.abs().neg_().exp_().add_(1).log_().add_(logits.clamp(min=0))


class _Softplus(torch.autograd.Function):
    """softplus_values with the gradient sigmoid(l), written out rather than taken through max and |l|,
    whose derivatives at l = 0 would give 0 or 1 instead of 1/2."""

    generate_vmap_rule = True  # torch.func's transforms see through it

    @staticmethod
    def forward(logits: torch.Tensor) -> torch.Tensor:
        return softplus_values(logits)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (logits,) = ctx.saved_tensors
        return grad * torch.sigmoid(logits)


def softplus(logits: torch.Tensor) -> torch.Tensor:
    """log(1 + e^l) elementwise, differentiable: softplus_values on the CPU, PyTorch's own kernel on a GPU,
    where one pass over memory beats the six of softplus_values."""
    if logits.device.type != "cpu":
        return F.softplus(logits)
    return _Softplus.apply(logits)


def bernoulli_log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x | logits) = sum_j x_j l_j - softplus(l_j) over the last dimension; stable for logits of any size.

    Our softplus rather than PyTorch's cross-entropy with logits, whose log-sigmoid kernel was a sixth of a
    one-thread training step at batch 128 on an AVX-512 CPU (docs/performance.md); the k-draw bounds use it
    too (reconstruction).
    """
    return (x * logits).sum(-1) - softplus(logits).sum(-1)


def standard_normal_log_density(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * (z.square() + LOG_2PI).sum(-1)


def gaussian_log_density(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mean, exp(logvar)) summed over the last dimension."""
    return -0.5 * ((z - mean).square() * torch.exp(-logvar) + logvar + LOG_2PI).sum(-1)


def log_mean_exp(values: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.logsumexp(values, dim) - math.log(values.shape[dim])


def mlp(sizes: list[int], activation: type[nn.Module]) -> nn.Sequential:
    """Linear layers of the given sizes with `activation` between them (none after the last)."""
    layers: list[nn.Module] = []
    for index, (inputs, outputs) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [nn.Linear(inputs, outputs)] + ([activation()] if index < len(sizes) - 2 else [])
    return nn.Sequential(*layers)


class VAE(GenerativeModel):
    capabilities = frozenset({"sample", "latent", "encoder", "manifold", "latent_likelihood"})
    pixel_distribution = "bernoulli"
    monitor = ("elbo", "max")
    headline_metrics = ("elbo",)

    def __init__(self, config: VAEConfig):
        super().__init__(config)
        activation, depth = ACTIVATIONS[config.activation], config.hidden_layers
        block = lambda inputs, width, outputs: mlp([inputs] + [width] * depth + [outputs], activation)  # noqa: E731
        # One linear layer gives mean and log-variance together: half the kernel launches of two heads.
        label = self.classes  # a conditional model's networks also take the one-hot label
        self.encoder = block(PIXELS + label, config.hidden, 2 * config.zdim)  # q(z1|x[,y])
        self.decoder = block(config.zdim + label, config.hidden, PIXELS)  # p(x|z1[,y])
        if config.stochastic_layers == 2:
            self.encoder_top = block(config.zdim, config.hidden2, 2 * config.zdim2)  # q(z2|z1)
            self.decoder_top = block(config.zdim2, config.hidden2, 2 * config.zdim)  # p(z1|z2)
        if config.init in ("glorot", "paper"):
            self.glorot_initialization()
        else:
            # The decoder starts as the uniform Bernoulli (all logits 0): the untrained ELBO is then
            # exactly -784 ln 2 - KL, about -543 nats, and the first steps learn the pixel means.
            nn.init.zeros_(self.decoder[-1].weight)
            nn.init.zeros_(self.decoder[-1].bias)
            if self.hierarchical:  # p(z1|z2) starts as N(0, I), so the untrained model is the one-layer model's start
                nn.init.zeros_(self.decoder_top[-1].weight)
                nn.init.zeros_(self.decoder_top[-1].bias)
        # --ema: a copy of every network that follows the live weights (optimizer_stepped) and stands in for
        # them in eval mode, as BatchNorm's running statistics do; stored in checkpoints as "average.*".
        self.average = None
        if config.ema > 0:
            self.average = copy.deepcopy(self.live_networks()).requires_grad_(False)
        self.use_live_weights = False  # set by sample(averaged=False): eval mode on the live weights

    def glorot_initialization(self) -> None:
        """As the IWAE paper's code (yburda/iwae, nnet.py): every weight uniform in +-sqrt(6 / (fan_in + fan_out))
        (Glorot & Bengio 2010, meant for tanh units), every bias zero; with init 'paper', initialize_from_data
        then sets the decoder's output bias. The paper's Gaussian layers have two heads, the mean and
        sigma = exp(linear); dgm's one head gives mean and log-variance (2 log sigma), so each half is drawn
        as a head of zdim outputs, and the log-variance half at twice the scale."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                bound = math.sqrt(6 / (module.in_features + module.out_features))
                nn.init.uniform_(module.weight, -bound, bound)
                nn.init.zeros_(module.bias)
        heads = [self.encoder[-1]] + ([self.encoder_top[-1], self.decoder_top[-1]] if self.hierarchical else [])
        with torch.no_grad():
            for head in heads:
                half = head.out_features // 2
                bound = math.sqrt(6 / (head.in_features + half))
                head.weight[:half].uniform_(-bound, bound)
                head.weight[half:].uniform_(-2 * bound, 2 * bound)

    def initialize_from_data(self, images: torch.Tensor) -> None:
        """With --init paper, the decoder's output bias at the logit of the mean training image (clipped to
        [0.001, 0.999], as the paper's code does), so the untrained model already draws the average digit."""
        if self.config.init == "paper":
            mean = images.flatten(1).float().mean(0) / 255
            with torch.no_grad():
                self.decoder[-1].bias.copy_(torch.logit(mean.clamp(0.001, 0.999)))
            if self.average is not None:  # the average starts where training does
                self.average.load_state_dict(self.live_networks().state_dict())

    @property
    def network_names(self) -> tuple[str, ...]:
        return ("encoder", "decoder") + (("encoder_top", "decoder_top") if self.hierarchical else ())

    def live_networks(self) -> nn.ModuleDict:
        """The networks training steps, keyed as self.average (a view: no copies)."""
        return nn.ModuleDict({name: getattr(self, name) for name in self.network_names})

    def network(self, name: str) -> nn.Sequential:
        """The network `name` as the model uses it now: its moving average in eval mode when the run kept one
        (--ema), unless sample(averaged=False) asked for the live weights; the live network otherwise."""
        if self.average is not None and not self.training and not self.use_live_weights:
            return self.average[name]
        return getattr(self, name)

    @property
    def keeps_average(self) -> bool:
        return self.average is not None

    def weight_averages(self):
        return [("average.", self.average, self.live_networks())] if self.average is not None else []

    def optimizer_stepped(self, optimizer: torch.optim.Optimizer) -> None:
        if self.average is not None:
            update_average(self.average, self.live_networks(), optimizer, self.config.ema)

    @property
    def hierarchical(self) -> bool:
        return self.config.stochastic_layers == 2

    @property
    def latent_dim(self) -> int:
        """The top latent's size: what the prior N(0, I) is over, and what sampling and interpolation walk in."""
        return self.config.zdim2 if self.hierarchical else self.config.zdim

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        config = self.config
        return [
            adam(self.live_networks().parameters(), lr=config.lr, eps=config.adam_eps, betas=(config.adam_beta1, 0.999))
        ]

    def learning_rate_factor(self, progress: float) -> float:
        return learning_rate_factor(self.config.lr_schedule, progress)

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

    def posterior_parameters(
        self, x: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(z1|x) (of q(z1|x,y) for a conditional model)."""
        mean, logvar = self.network("encoder")(with_label(x, labels, self.classes)).chunk(2, dim=-1)
        return mean, logvar

    def encode_images(self, batch: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Posterior means of the top latent for uint8 images (binarized by a draw, as everywhere);
        with two layers, q(z2|z1)'s mean at q(z1|x)'s mean."""
        mean = self.posterior_parameters(self.binary_pixels(batch), self.sample_labels(len(batch), labels))[0]
        return self.network("encoder_top")(mean).chunk(2, dim=-1)[0] if self.hierarchical else mean

    def decoder_logits(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Bernoulli logits (..., 784) of p(x|z1) (of p(x|z1,y) for a conditional model)."""
        return self.network("decoder")(with_label(z, labels, self.classes))

    def decode_images(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Bernoulli means as images (N, 1, 28, 28) for top latents z; with two layers through p(z1|z2)'s mean."""
        if self.hierarchical:
            z = self.network("decoder_top")(z).chunk(2, dim=-1)[0]
        return torch.sigmoid(self.decoder_logits(z, self.sample_labels(len(z), labels))).view(-1, *IMAGE_SHAPE)

    def elbo(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-image one-sample ELBO and its two terms, for binary pixels x (B, 784).

        One stochastic layer: the KL in closed form (the seed's estimator). Two: log q - log p of the draws.
        """
        if self.hierarchical:
            reconstruction, log_prior, log_q = self.log_weight_terms(x, 1, noise=self.batch_noise)
            return {
                "elbo": (reconstruction + log_prior - log_q)[:, 0],
                "reconstruction": reconstruction[:, 0],
                "kl": (log_q - log_prior)[:, 0],
            }
        mean, logvar = self.posterior_parameters(x, labels)
        eps = self.batch_noise(lambda rows: torch.randn(rows, mean.shape[1], device=mean.device), len(mean))
        z = mean + torch.exp(0.5 * logvar) * eps
        reconstruction = bernoulli_log_likelihood(self.decoder_logits(z, labels), x)
        kl = gaussian_kl(mean, logvar)
        return {"elbo": reconstruction - kl, "reconstruction": reconstruction, "kl": kl}

    def log_weight_terms(self, x: torch.Tensor, k: int, *, noise=None, posterior=None, projected_x=None, labels=None):
        """For k draws z ~ q(z|x) per image: log p(x|z1), log p(z), log q(z|x), each (B, k), in one batched pass.

        noise(draw, rows) supplies the standard-normal draws (the trainer's batch_noise, so data-parallel
        processes draw what one process would); by default they come from torch's generator directly.
        posterior (q(z1|x)'s mean and log-variance) and projected_x (see reconstruction) may be passed in
        when the same images get many chunks of draws. labels: each image's class, for a conditional model.
        """
        noise = noise or (lambda draw, rows: draw(rows))
        rows, device = len(x), x.device
        mean, logvar = self.posterior_parameters(x, labels) if posterior is None else posterior
        eps = noise(lambda n: torch.randn(n, k, self.config.zdim, device=device), rows)
        z1 = mean[:, None] + torch.exp(0.5 * logvar)[:, None] * eps
        log_q = -0.5 * (eps.square() + logvar[:, None] + LOG_2PI).sum(-1)
        if self.hierarchical:
            mean2, logvar2 = self.network("encoder_top")(z1).chunk(2, dim=-1)
            eps2 = noise(lambda n: torch.randn(n, k, self.config.zdim2, device=device), rows)
            z2 = mean2 + torch.exp(0.5 * logvar2) * eps2
            log_q = log_q - 0.5 * (eps2.square() + logvar2 + LOG_2PI).sum(-1)
            prior_mean, prior_logvar = self.network("decoder_top")(z2).chunk(2, dim=-1)
            log_prior = standard_normal_log_density(z2) + gaussian_log_density(z1, prior_mean, prior_logvar)
        else:
            log_prior = standard_normal_log_density(z1)
        return self.reconstruction(z1, x, projected_x, labels), log_prior, log_q

    def reconstruction(
        self,
        z: torch.Tensor,
        x: torch.Tensor,
        projected_x: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """log p(x|z1) summed over pixels, (B, k), for k latents per image z (B, k, zdim) and binary x (B, 784).

        With logits l = h W^T + b, log p(x|z1) = sum_j x_j l_j - softplus(l_j), and the first sum is
        [h, 1] . ([W, b]^T x), a vector per image (`projected_x`, computed here unless given) that its k draws
        share. Only the softplus needs the k x 784 logits: one pass over them where a cross-entropy against an
        expanded x makes several, and the bias rides in the matrix product as a column of ones instead of
        being copied into the output first. This is most of the work of a 5,000-draw estimate
        (benchmarks/estimator_speed.py, docs/vae.md).
        """
        weight = self.output_weight()
        hidden = self.network("decoder")[:-1](with_label(z, labels, self.classes))
        hidden = torch.cat([hidden, torch.ones_like(hidden[..., :1])], dim=-1)
        projected_x = x @ weight if projected_x is None else projected_x
        shared = (hidden * projected_x[:, None]).sum(-1)
        return shared - softplus(hidden @ weight.T).sum(-1)

    def output_weight(self) -> torch.Tensor:
        """The decoder's last layer as one matrix [W, b] (784, hidden + 1)."""
        last = self.network("decoder")[-1]
        return torch.cat([last.weight, last.bias[:, None]], dim=1)

    def training_bound(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-image values of the configured objective ("bound") and the terms the trainer records."""
        config = self.config
        if config.objective == "elbo" and config.k == 1:
            terms = self.elbo(x, labels)
            return {"bound": terms["elbo"], **terms}
        reconstruction, log_prior, log_q = self.log_weight_terms(x, config.k, noise=self.batch_noise, labels=labels)
        log_w = reconstruction + log_prior - log_q
        bound = log_mean_exp(log_w, 1) if config.objective == "iwae" else log_w.mean(1)
        return {
            "bound": bound,
            "elbo": log_w.mean(1),
            "reconstruction": reconstruction.mean(1),
            "kl": (log_q - log_prior).mean(1),
        }

    def training_step(self, batch, labels=None):
        terms = self.training_bound(self.binary_pixels(batch), self.given_labels(labels))
        means = {name: value.mean() for name, value in terms.items()}
        loss = -means.pop("bound")
        if self.config.objective == "iwae":
            means["iwae"] = -loss
        return {"loss": loss, **{name: value.detach() for name, value in means.items()}}

    def validation_step(self, batch, labels=None):
        x, labels = self.binary_pixels(batch), self.given_labels(labels)
        means = {name: value.mean() for name, value in self.elbo(x, labels).items()}
        if self.config.objective == "iwae":  # the bound it trains, with its k
            reconstruction, log_prior, log_q = self.log_weight_terms(
                x, self.config.k, noise=self.batch_noise, labels=labels
            )
            means["iwae"] = log_mean_exp(reconstruction + log_prior - log_q, 1).mean()
        return means

    def log_weights(
        self, batch: torch.Tensor, k: int, *, proposal: str, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """log p(x, z_i) - log r(z_i) for k draws z_i ~ r per image: (B, k).

        proposal "posterior": r = q(z|x), the importance-weighted estimator;
        proposal "prior":     r = p(z), the naive Monte-Carlo estimator (the weights are p(x|z_i)).
        The log of their mean is a stochastic lower bound on log p(x) either way (on log p(x|y) for a
        conditional model, with the images' labels).
        """
        return self.log_weight_draws(batch, proposal, labels)(k)

    def log_weight_draws(self, batch: torch.Tensor, proposal: str, labels: torch.Tensor | None = None):
        """log_weights(batch, k, proposal) as a function of k, with what the draws share computed once:
        the binarized images, q(z1|x), and the images' projection through the decoder's last layer."""
        if proposal not in ("posterior", "prior"):
            raise ValueError(f"unknown proposal {proposal!r}")
        x, labels = self.binary_pixels(batch), self.given_labels(labels)
        projected_x = x @ self.output_weight()
        if proposal == "posterior":
            posterior = self.posterior_parameters(x, labels)

            def posterior_draws(k: int) -> torch.Tensor:
                reconstruction, log_prior, log_q = self.log_weight_terms(
                    x, k, posterior=posterior, projected_x=projected_x, labels=labels
                )
                return reconstruction + log_prior - log_q

            return posterior_draws

        def prior_draws(k: int) -> torch.Tensor:
            z = torch.randn(len(x), k, self.latent_dim, device=x.device)
            if self.hierarchical:  # z1 ~ p(z1|z2): ancestral sampling down to the pixels
                mean, logvar = self.network("decoder_top")(z).chunk(2, dim=-1)
                z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
            return self.reconstruction(z, x, projected_x, labels)

        return prior_draws

    def draw(self, n, *, generator, averaged, temperature, labels):
        with contextlib.nullcontext() if averaged else self.live_weights():
            labels = self.sample_labels(n, labels)
            z = temperature * torch.randn(n, self.latent_dim, generator=generator).to(self.device)
            if self.hierarchical:
                mean, logvar = self.network("decoder_top")(z).chunk(2, dim=-1)
                noise = temperature * torch.randn(mean.shape, generator=generator).to(self.device)
                z = mean + torch.exp(0.5 * logvar) * noise
            return torch.sigmoid(self.decoder_logits(z, labels)).view(-1, *IMAGE_SHAPE)

    @contextlib.contextmanager
    def live_weights(self):
        """Eval mode on the weights as trained rather than their average (dgm sample --raw)."""
        self.use_live_weights = True
        try:
            yield
        finally:
            self.use_live_weights = False

    def manifold(self, grid: int, edge: float = 0.05, label: int | None = None) -> torch.Tensor:
        """Decoder means over a grid x grid lattice of the top latent, row-major, for a 2-D latent space.

        Grid points sit at the standard-normal quantiles of evenly spaced
        probabilities edge..1-edge, so equal areas of prior mass get equal room;
        z1 grows to the right, z2 grows upwards. A conditional model draws it for one class, `label`.
        """
        if self.latent_dim != 2:
            raise ValueError("the manifold needs a 2-D latent space")
        values = torch.special.ndtri(torch.linspace(edge, 1 - edge, grid, dtype=torch.float64)).float()
        z2, z1 = torch.meshgrid(values.flip(0), values, indexing="ij")
        labels = None if label is None else torch.full((grid * grid,), label)
        return self.decode_images(torch.stack([z1, z2], dim=-1).reshape(-1, 2).to(self.device), labels)


# What `--minutes M` trains with, for M up to 120, where these fields are not given: the best validation NLL
# of benchmarks/budget_search.py at five minutes on a core, and at fifteen and sixty (the five-minute winner
# against the defaults; docs/performance.md). Each time a wider network in larger batches at a higher rate ended
# a little ahead of the defaults (0.60, 0.35 and 0.48 nats), about the standard error over the digits (0.52)
# or less. Longer budgets keep the defaults above.
BUDGET_FIELDS = {"hidden": 1000, "batch_size": 256, "lr": 2e-3}
BUDGET_DEFAULTS = searched_budgets("vae", {5: BUDGET_FIELDS, 15: BUDGET_FIELDS, 60: BUDGET_FIELDS})

register(
    ModelSpec(
        name="vae",
        config_class=VAEConfig,
        module_class=VAE,
        description="variational autoencoder: MLP encoder and decoder, ELBO or IWAE bound, one or two stochastic layers",
        presets=PRESETS,
        budget_defaults=BUDGET_DEFAULTS,
    )
)
