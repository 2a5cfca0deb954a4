"""What the generic code (trainer, evaluation, CLI) may ask of any model.

Optional abilities are declared in `capabilities` rather than probed with
hasattr, so `dgm models` can list them and a command can refuse early:
  "sample"             sample(n) draws images (every generative model; not the classifier)
  "latent"             decode_images(z) from a standard-normal latent of size latent_dim
  "manifold"           manifold(grid, edge) for a 2-D latent space
  "latent_likelihood"  log_weights(x, k, proposal="posterior"|"prior") for ELBO and importance sampling
  "exact_likelihood"   log_density(w) of dequantised pixels, and log_weights(x, k, proposal="dequantization")
  "encoder"            encode_images(x) -> latents of real images, for interpolating between them
  "classifier"         forward(x) -> class logits and features(x) -> the penultimate layer
  "variational_bound"  timesteps, prior_term(x) and timestep_term(x, t, eps) of a diffusion model's bound
                       (evaluate.timestep_bound sums them over all steps or a sample of them)
  "iterative_sampler"  sampler options (sampler, steps, eta, guidance, on_step) as keyword arguments of
                       sample/encode/decode, and denoising_steps(n, **options) for a progress bar's total
"""

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from dgm_cli.errors import DgmError
from dgm_cli.models.conditioning import CLASSES, balanced_labels, check_labels


@dataclass(frozen=True)
class Shard:
    """Under torchrun: the rows start:stop of a global batch of `size` rows that this process holds."""

    start: int
    stop: int
    size: int
    world_size: int

    @property
    def loss_weight(self) -> float:
        """What a shard's mean loss is multiplied by so that DistributedDataParallel's average of the
        ranks' gradients is the gradient of the global batch's mean, also when shards differ in size."""
        return (self.stop - self.start) * self.world_size / self.size


def adam(parameters, **settings) -> torch.optim.Adam:
    """Adam with PyTorch's fused kernel: one pass over each tensor instead of a dozen elementwise ops.

    On the CPU it takes about a tenth off the VAE's training step (benchmarks/vae_step.py,
    docs/performance.md); the arithmetic is Adam's, unchanged.
    """
    return torch.optim.Adam(parameters, fused=True, **settings)


def ema_decay(ema: float, updates_before: int) -> float:
    """A weight average's decay at its (updates_before + 1)-th update: min(ema, (1 + t) / (10 + t)).

    A warm-up: with the configured decay from the first step, the average of a short run would still
    be mostly its random start (0.999^500 = 0.61 of it after 500 steps) and sample noise; this way it
    follows the live weights closely at first and settles to the configured decay after about
    10 / (1 - ema) steps.
    """
    return min(ema, (1 + updates_before) / (10 + updates_before))


def average_weight_on_device(steps: torch.Tensor, ema: float) -> torch.Tensor:
    """1 - ema_decay(ema, steps - 1) = max(1 - ema, 9 / (9 + steps)) as a tensor where `steps` is, never read
    on the host."""
    return (9 / (9 + steps)).clamp(min=1 - ema)


@torch.no_grad()
def update_average(averaged: nn.Module, live: nn.Module, optimizer: torch.optim.Optimizer, ema: float) -> None:
    """Move `averaged`'s parameters a step towards `live`'s, after an optimizer step of `live`, and copy the
    buffers (BatchNorm statistics). The optimizer counts its steps, and a resumed run restores the count,
    so the warm-up continues where it was."""
    averaged_parameters, live_parameters = list(averaged.parameters()), list(live.parameters())
    steps = optimizer.state[live_parameters[0]]["step"]
    if steps.device.type == "cpu":  # reading the count is free, and a number weight lerps twice as fast on a CPU
        weight = 1 - ema_decay(ema, int(steps) - 1)
    else:  # the fused Adam counts on the GPU: reading the count there would make the host wait for each step
        weight = [average_weight_on_device(steps, ema)] * len(live_parameters)
    torch._foreach_lerp_(averaged_parameters, live_parameters, weight)
    for averaged_buffer, live_buffer in zip(averaged.buffers(), live.buffers()):
        averaged_buffer.copy_(live_buffer)


class GenerativeModel(nn.Module):
    capabilities: frozenset[str] = frozenset()
    # "bernoulli" when sample() returns pixel probabilities from which binary images can be drawn.
    pixel_distribution: str | None = None
    # The validation metric (without its "val_" prefix) that picks best.safetensors and its direction,
    # or None when no held-out number ranks epochs (then only last.safetensors is written).
    monitor: tuple[str, str] | None = ("loss", "min")
    # False: training_step returns a "loss" that the trainer back-propagates through the one optimizer.
    # True: training_step steps the model's own optimizers (the GAN's two alternating steps).
    manual_optimization: bool = False
    # The metrics the progress bar and the per-epoch line show.
    headline_metrics: tuple[str, ...] = ("loss",)
    # Horizontal reference lines in curves.png: metric name -> (value, legend label).
    reference_lines: dict[str, tuple[float, str]] = {}
    # How many samples the trainer draws into each samples/epoch_XXX.png.
    training_samples: int = 64
    # True: training needs every image's class (the classifier), whatever the config says.
    needs_labels: bool = False
    # False: --precision bf16 is refused (the flow's log-determinants need fp32).
    reduced_precision: bool = True
    # Under torchrun, which rows of the global batch this process holds; set by the trainer before
    # each step and validation batch, None in a single process.
    shard: Shard | None = None

    # The registry name, set by registry.register.
    model_name: str = ""

    def __init__(self, config):
        super().__init__()
        self.config = config
        # What a loaded checkpoint recorded (dgm.load fills them): where it was read, the data it was trained on
        # (Dataset.describe()) and the training facts (epoch, step, seed, metrics); a new model has none.
        self.path = None
        self.data_facts: dict = {}
        self.training_facts: dict = {}
        # True when loaded from an inference-only file (a pretrained model of the zoo): it lacks the tensors
        # only training reads, so its live weights are a copy of their average.
        self.inference_only = False

    @property
    def classes(self) -> int:
        """How many classes a conditional model (config field `conditional`) takes as labels; 0 when unconditional."""
        return getattr(self.config, "classes", CLASSES) if getattr(self.config, "conditional", False) else 0

    def given_labels(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        """A training or validation batch's labels for a conditional model, None for an unconditional one
        (which ignores them). Their range is checked once for the whole dataset, not every step."""
        if not self.classes:
            return None
        if labels is None:
            raise DgmError("a conditional model needs the images' class labels")
        return labels

    def sample_labels(self, n: int, labels: torch.Tensor | None) -> torch.Tensor | None:
        """The labels to sample n images of: as given (checked), or for a conditional model given none,
        every class in turn (0, 1, ..., 9, 0, ...)."""
        if labels is None and self.classes:
            labels = balanced_labels(n, self.classes)
        check_labels(labels, self.classes)
        return None if labels is None else labels.to(self.device)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """The optimizers, created once by the trainer (a manual model keeps them for its own steps)."""
        raise NotImplementedError

    def batch_noise(self, draw: Callable[[int], torch.Tensor], rows: int, *, dim: int = 0) -> torch.Tensor:
        """Random numbers for `rows` batch rows: draw(size) along dimension `dim`.

        Under torchrun every process draws them for the whole global batch and keeps its own rows, so
        all processes' generators stay in step and N processes draw exactly what one process would:
        data-parallel training is the same computation as training in one process, up to the order
        of floating-point sums. The extra draws cost little beside the network.
        """
        if self.shard is None:
            return draw(rows)
        return draw(self.shard.size).narrow(dim, self.shard.start, self.shard.stop - self.shard.start)

    def shard_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss to back-propagate: the shard's mean weighted by Shard.loss_weight under torchrun,
        the loss itself (no extra operation) in one process."""
        return loss if self.shard is None else loss * self.shard.loss_weight

    def distribute(self, wrap: Callable[[nn.Module], nn.Module]) -> Callable:
        """Under torchrun: the training step to call instead of training_step, built with `wrap`
        (which makes a module DistributedDataParallel). By default the whole step is one module,
        whose loss the trainer back-propagates; a model that steps its own optimizers overrides this
        and wraps the parts it steps."""
        return wrap(TrainingStep(self))

    def learning_rate_factor(self, progress: float) -> float:
        """The share of the configured learning rate to use at `progress` (0 at the first step, 1 at the end)."""
        return 1.0

    def initialize_from_data(self, images: torch.Tensor) -> None:
        """A start that depends on the training images (uint8, (N, 28, 28)), before the first step of a run
        from scratch; it must draw no random numbers, so the run's streams stay those of its seed. Nothing by
        default."""

    def prepare_split(self, images: torch.Tensor, *, train: bool, generator: torch.Generator) -> torch.Tensor:
        """Turn a uint8 split into what the steps take, once, before training (identity by default)."""
        return images

    def training_step(self, batch: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Batch means of the metrics; "loss" is the one the trainer back-propagates.

        batch: uint8 images (B, 28, 28) from prepare_split; labels: their classes, which the classifier
        and the conditional generative models learn from and the unconditional ones ignore.
        """
        raise NotImplementedError

    def validation_step(self, batch: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def log_weight_draws(
        self, batch: torch.Tensor, proposal: str, labels: torch.Tensor | None = None
    ) -> Callable[[int], torch.Tensor]:
        """log_weights(batch, k, proposal=proposal, labels=labels) as a function of k, for an estimator that
        draws its k in chunks: a model overrides it to compute once what every chunk of the same images shares.
        labels: for a conditional model, the class each image is scored under (log p(x | y))."""
        return lambda k: self.log_weights(batch, k, proposal=proposal, labels=labels)

    @property
    def keeps_average(self) -> bool:
        """True when the model keeps a moving average of its weights that sampling uses by default."""
        return False

    def weight_averages(self) -> list[tuple[str, nn.Module, nn.Module]]:
        """For each moving average of weights the model keeps: the prefix of its tensors' names in the state dict,
        the averaged module, and the live module it follows (same structure). None by default."""
        return []

    def training_only_tensors(self) -> set[str]:
        """State-dict names of the tensors that sampling and evaluation never read: the live weights beside their
        moving average. What model.save(path, inference_only=True) leaves out; a model adds its own (the GAN's
        discriminator)."""
        names = set()
        for _, _, live in self.weight_averages():
            live_tensors = {id(tensor) for tensor in live.state_dict(keep_vars=True).values()}
            names |= {name for name, tensor in self.state_dict(keep_vars=True).items() if id(tensor) in live_tensors}
        return names

    def check_live_weights(self) -> None:
        """Refuse to use the live weights of a model loaded from an inference-only file, which has only their average."""
        if self.inference_only and self.keeps_average:
            raise DgmError(
                f"{self.path or 'this model'} holds only the moving average of the weights (a pretrained "
                "model of the zoo); the live weights (--raw) are in the checkpoints dgm train writes"
            )

    def optimizer_stepped(self, optimizer: torch.optim.Optimizer) -> None:
        """Called by the trainer after each step of `optimizer` it takes for the model (automatic optimization):
        where a model moves its weights' average (the VAE's --ema). Nothing by default."""

    # The keyword options of an iterative sampler that sample(), decode() and encode() take (the diffusion
    # model's sampler, steps, eta, guidance, on_step); a model that draws in one pass takes none.
    sampler_options: frozenset[str] = frozenset()

    def check_sampler_options(self, options: dict) -> None:
        """Refuse sampler options this model does not take, naming them."""
        unknown = sorted(
            name for name, value in options.items() if value is not None and name not in self.sampler_options
        )
        if unknown:
            takes = (
                f"it takes {', '.join(sorted(self.sampler_options))}"
                if self.sampler_options
                else "it draws in one pass"
            )
            raise DgmError(f"{', '.join(unknown)}: not a sampler option of the {self.model_name}; {takes}")

    def sample(
        self,
        n: int,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        labels: torch.Tensor | None = None,
        averaged: bool = True,
        **sampler_options,
    ) -> torch.Tensor:
        """n images, a float tensor (n, 1, 28, 28) with values in [0, 1], on the model's device.

        seed: the noise's seed (the same seed gives the same images on every device); or generator: a CPU
        torch.Generator to draw from; neither: drawn from torch's global random state.
        temperature: the standard deviation of the latent draws (below 1: fewer, cleaner modes).
        labels (n,): each image's class, for a conditional model (left out: every class in turn).
        averaged=False: the live weights of a model that also keeps their moving average.
        sampler_options: an iterative sampler's choices (the diffusion model: sampler="ddim"|"ancestral",
        steps, eta, guidance, on_step=callback(count) after each denoising step).
        The model is in eval mode while it draws and returns to its mode after.
        """
        if "sample" not in self.capabilities:
            raise DgmError(f"a {type(self).__name__.lower()} draws no images; sample from a generative model")
        self.check_sampler_options(sampler_options)
        if not averaged:
            self.check_live_weights()
        if generator is None:
            seed = int(torch.randint(0, 2**62, ())) if seed is None else seed
            generator = torch.Generator().manual_seed(seed)
        with torch.no_grad(), evaluating(self):
            return self.draw(
                n,
                generator=generator,
                averaged=averaged,
                temperature=temperature,
                labels=labels,
                **{name: value for name, value in sampler_options.items() if value is not None},
            )

    def describe_sampler(self, **sampler_options) -> dict | None:
        """The sampler these options choose, as a report records it; None for a model that draws in one pass."""
        return None

    def draw(
        self, n: int, *, generator: torch.Generator, averaged: bool, temperature: float, labels, **sampler_options
    ):
        """What sample() runs, in eval mode without gradients: the model's own way of drawing n images."""
        raise NotImplementedError

    def encode(self, images: torch.Tensor, labels: torch.Tensor | None = None, *, seed: int = 0, **sampler_options):
        """Latents (N, latent_dim) of real images: (N, 1, 28, 28) or (N, 28, 28), floats in [0, 1] or uint8.

        The VAE's posterior means (of a binarization drawn with `seed`), the flow's z, the diffusion model's
        DDIM latent x_T; labels (N,): each image's class, for a conditional model."""
        if "encoder" not in self.capabilities:
            raise DgmError(f"a {type(self).__name__.lower()} has no encoder that maps images to latents")
        self.check_sampler_options(sampler_options)
        pixels = as_uint8_images(images)
        prepared = self.prepare_split(pixels, train=False, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad(), evaluating(self):
            return self.encode_images(prepared.to(self.device), labels, **sampler_options)

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None, **sampler_options) -> torch.Tensor:
        """Images (N, 1, 28, 28) in [0, 1] decoded from latents z (N, latent_dim) of the standard-normal prior
        (by the weights' moving average where the model keeps one); labels (N,) for a conditional model."""
        if "latent" not in self.capabilities:
            raise DgmError(f"a {type(self).__name__.lower()} has no latent space to decode from")
        self.check_sampler_options(sampler_options)
        with torch.no_grad(), evaluating(self):
            return self.decode_images(z.to(self.device), labels, **sampler_options)

    def save(self, path, *, data: dict | None = None, train: dict | None = None, inference_only: bool = False) -> None:
        """Write the model to a safetensors checkpoint, the format `dgm train` writes and dgm.load reads.

        data and train: the facts its header records (default: those it was loaded with, else none).
        inference_only: leave out what only training reads (the live weights beside their moving average, a
        GAN's discriminator): a smaller file that samples and evaluates the same, as the model zoo ships."""
        from dgm_cli.checkpoint import save_model

        save_model(path, self, data=data, train=train, inference_only=inference_only)


@contextlib.contextmanager
def evaluating(model: nn.Module):
    """Eval mode for the block, then the mode the model was in."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def as_uint8_images(images) -> torch.Tensor:
    """(N, 28, 28) uint8 pixels from images (N, 1, 28, 28) or (N, 28, 28): uint8, or floats in [0, 1]."""
    images = torch.as_tensor(images)
    if images.dim() == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.dim() != 3 or tuple(images.shape[1:]) != (28, 28):
        raise DgmError(f"images must be (N, 1, 28, 28) or (N, 28, 28), got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.cpu()
    if not images.is_floating_point():
        raise DgmError(f"images must be uint8 or floats in [0, 1], got {images.dtype}")
    if images.numel() and not (0 <= float(images.min()) and float(images.max()) <= 1):
        raise DgmError(
            f"float images must lie in [0, 1], got values in [{float(images.min()):g}, {float(images.max()):g}]"
        )
    return (images.detach().cpu() * 255).round().to(torch.uint8)


class TrainingStep(nn.Module):
    """A model's training_step as a module's forward, which DistributedDataParallel needs in order to
    average the gradients of what it returns. It holds the model, so its parameters are the model's."""

    def __init__(self, model: GenerativeModel):
        super().__init__()
        self.model = model

    def forward(self, batch, labels=None):
        return self.model.training_step(batch, labels)
