"""Image grids (PIL) and training curves (matplotlib, headless Agg backend)."""

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from dgm_cli.atomic import atomic_path
from dgm_cli.errors import DgmError


def image_grid(images: torch.Tensor, *, nrow: int | None = None, padding: int = 2, scale: int = 2) -> Image.Image:
    """Tile (N, 1, H, W) images in [0, 1] into one greyscale picture, `nrow` images per row.

    Each pixel is drawn as a scale x scale block so 28-pixel digits stay legible in docs.
    """
    images = images.detach().to("cpu", torch.float32).clamp(0, 1)
    n, _, height, width = images.shape
    nrow = min(nrow or math.ceil(math.sqrt(n)), n)  # a row longer than the images would be blank paper
    rows = math.ceil(n / nrow)
    canvas = torch.ones(rows * (height + padding) + padding, nrow * (width + padding) + padding)
    for index in range(n):
        top = padding + (index // nrow) * (height + padding)
        left = padding + (index % nrow) * (width + padding)
        canvas[top : top + height, left : left + width] = images[index, 0]
    pixels = (canvas * 255).round().to(torch.uint8)
    if scale > 1:
        pixels = pixels.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
    return Image.fromarray(pixels.numpy(), mode="L")


@dataclass
class Figure:
    """An image grid to save: images (N, 1, 28, 28) in [0, 1], nrow images a row, and what it shows in words."""

    images: torch.Tensor
    nrow: int | None
    description: str


def save_image_grid(images: torch.Tensor, path: Path, *, nrow: int | None = None) -> Path:
    """Save images (N, 1, 28, 28) in [0, 1] as one PNG grid, nrow a row (default: a square), each pixel drawn
    2x2; written to a temporary file and renamed, so the path never holds half a picture."""
    path = Path(path)
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None:
        raise DgmError(f"cannot tell an image format from '{path.name}'; end the file name in .png")
    with atomic_path(path) as tmp:
        image_grid(images, nrow=nrow).save(tmp, format=image_format)
    return path


def save_curves(
    history: list[dict], path: Path, *, title: str, reference_lines: dict[str, tuple[float, str]] | None = None
) -> Path:
    """One panel per named metric, train and validation on the same axes.

    "loss" is left out: it is the optimizer's view of a metric that has its own
    panel (for the VAE, the negative ELBO). So is epoch 0, the untrained model,
    once later epochs exist, because its values (ELBO -543) would flatten the
    scale of everything after it; metrics.jsonl keeps it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(history) > 1:
        history = [record for record in history if record["epoch"] > 0]
    names = sorted(
        {key.split("_", 1)[1] for record in history for key in record if key.startswith(("train_", "val_"))} - {"loss"}
    )
    figure, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.5), squeeze=False)
    for axis, name in zip(axes[0], names):
        for split, style in (("train", "-o"), ("val", "-s")):
            points = [(r["epoch"], r[f"{split}_{name}"]) for r in history if f"{split}_{name}" in r]
            if points:
                axis.plot(*zip(*points), style, markersize=3, label=split)
        if reference_lines and name in reference_lines:
            value, label = reference_lines[name]
            axis.axhline(value, color="grey", linestyle="--", linewidth=1, label=label)
        axis.set_xlabel("epoch")
        axis.set_ylabel(name)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    with atomic_path(Path(path)) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)
    return Path(path)
