"""The classifier whose feature space the sample-quality metrics live in.

Inception features suit digits badly and cannot be downloaded offline, so the
metrics use this small convolutional network instead, trained by
`dgm train classifier` and shipped inside the package for MNIST and for
Fashion-MNIST, so every user measures with the same network
(feature_network.py picks the one that fits the data). On an image folder it
trains with as many classes as the folder has class folders.

Three 3x3 convolution blocks (32, 64, 96 channels, BatchNorm, ReLU; the first
two followed by 2x2 max-pooling), average pooling of the 7x7 maps to 3x3 (a
global average lost the layout that tells a 6 from a 9 often enough to cost
0.2% of test accuracy), a 128-unit hidden layer (the
penultimate layer: the features the metrics use), and a linear layer to the
10 class logits. Training shifts each image by up
to 2 pixels in each direction, a cheap augmentation that is worth about a
tenth of a percent of test accuracy.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dgm_cli.config import check, classes_option, minutes_option, option
from dgm_cli.data import ASSETS
from dgm_cli.models.base import GenerativeModel, adam
from dgm_cli.registry import ModelSpec, register

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
FEATURES = 128


@dataclass(frozen=True)
class ClassifierConfig:
    shift: int = option(2, "Largest random shift of a training image, in pixels (0 = no augmentation).", min=0, max=8)
    epochs: int = option(15, "Passes over the training split.", min=0, max=100_000)
    minutes: float = minutes_option()
    batch_size: int = option(128, "Images per optimizer step.", min=1, max=65_536)
    lr: float = option(1e-3, "Adam learning rate at the start; it decays to 0 along a cosine.", min=1e-8, max=10.0)
    sample_epochs: tuple[int, ...] = option((), "Unused: a classifier draws no samples.", min=0)
    classes: int = classes_option()

    def __post_init__(self):
        check(self)


def conv_block(inputs: int, outputs: int) -> list[nn.Module]:
    return [nn.Conv2d(inputs, outputs, 3, padding=1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU()]


def random_shift(images: torch.Tensor, shift: int, draw=None) -> torch.Tensor:
    """Shift each image of (B, 28, 28) by its own random offset of up to `shift` pixels, filling with zeros.

    draw(make_offsets, rows) draws the (2, B) offsets (the model's batch_noise under torchrun).
    """
    if shift == 0:
        return images
    size = images.shape[-1]
    padded = F.pad(images, (shift, shift, shift, shift))
    make_offsets = lambda rows: torch.randint(0, 2 * shift + 1, (2, rows), device=images.device)  # noqa: E731
    offsets = make_offsets(len(images)) if draw is None else draw(make_offsets, len(images))
    rows = (offsets[0, :, None] + torch.arange(size, device=images.device))[:, :, None]
    cols = (offsets[1, :, None] + torch.arange(size, device=images.device))[:, None, :]
    return padded[torch.arange(len(images), device=images.device)[:, None, None], rows, cols]


class Classifier(GenerativeModel):
    capabilities = frozenset({"classifier"})
    needs_labels = True
    monitor = ("accuracy", "max")
    headline_metrics = ("loss", "accuracy")
    training_samples = 0

    def __init__(self, config: ClassifierConfig):
        super().__init__(config)
        self.body = nn.Sequential(
            *conv_block(1, 32),
            nn.MaxPool2d(2),
            *conv_block(32, 64),
            nn.MaxPool2d(2),
            *conv_block(64, 96),
            nn.AdaptiveAvgPool2d(3),
            nn.Flatten(),
            nn.Linear(96 * 3 * 3, FEATURES),
            nn.ReLU(),
        )
        self.head = nn.Linear(FEATURES, config.classes)
        self.schedule = None

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [adam(self.parameters(), lr=self.config.lr)]

    def learning_rate_factor(self, progress: float) -> float:
        """Cosine decay to zero: at a constant rate the BatchNorm network's held-out accuracy wobbles by
        half a percent from epoch to epoch; decayed, it settles."""
        return 0.5 * (1 + math.cos(math.pi * progress))

    @staticmethod
    def normalise(images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1], (B, 28, 28) or (B, 1, 28, 28) -> standardised (B, 1, 28, 28)."""
        return ((images.float() - MNIST_MEAN) / MNIST_STD).view(-1, 1, 28, 28)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The penultimate layer, (B, 128), for images in [0, 1]."""
        return self.body(self.normalise(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits (B, 10) for images in [0, 1]."""
        return self.head(self.features(images))

    def training_step(self, batch, labels=None):
        draw = lambda make, rows: self.batch_noise(make, rows, dim=1)  # noqa: E731
        logits = self(random_shift(batch, self.config.shift, draw).float() / 255)
        return {"loss": F.cross_entropy(logits, labels), "accuracy": (logits.argmax(1) == labels).float().mean()}

    def validation_step(self, batch, labels=None):
        logits = self(batch.float() / 255)
        return {"loss": F.cross_entropy(logits, labels), "accuracy": (logits.argmax(1) == labels).float().mean()}


SHIPPED_CHECKPOINT = ASSETS / "classifier" / "classifier.safetensors"  # the trained weights the metrics use

register(
    ModelSpec(
        name="classifier",
        config_class=ClassifierConfig,
        module_class=Classifier,
        description="digit classifier (small CNN) whose features the sample-quality metrics use",
    )
)
