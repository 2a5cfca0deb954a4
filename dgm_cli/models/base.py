"""What the generic code (trainer, evaluation, CLI) may ask of any model.

Optional abilities are declared in `capabilities` rather than probed with
hasattr, so `dgm models` can list them and a command can refuse early:
  "latent"             decode(z) from a standard-normal latent of size latent_dim
  "manifold"           manifold(grid, edge) for a 2-D latent space
  "latent_likelihood"  log_weights(x, k, proposal=...) for ELBO and importance sampling
"""

import torch
from torch import nn


class GenerativeModel(nn.Module):
    capabilities: frozenset[str] = frozenset()
    # "bernoulli" when sample() returns pixel probabilities from which binary images can be drawn.
    pixel_distribution: str | None = None
    # The validation metric (without its "val_" prefix) that picks best.safetensors, and its direction.
    monitor: tuple[str, str] = ("loss", "min")

    def __init__(self, config):
        super().__init__()
        self.config = config

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def configure_optimizer(self) -> torch.optim.Optimizer:
        raise NotImplementedError

    def prepare_split(self, images: torch.Tensor, *, train: bool, generator: torch.Generator) -> torch.Tensor:
        """Turn a uint8 split into what the steps take, once, before training (identity by default)."""
        return images

    def training_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """Batch means of the metrics; "loss" is the one the trainer back-propagates."""
        raise NotImplementedError

    def validation_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images (n, 1, 28, 28) with values in [0, 1]; noise comes from `generator` (a CPU one)."""
        raise NotImplementedError
