"""Images from a trained model: samples, binary draws, the 2-D latent manifold.

Noise comes from a seeded CPU generator, so a seed gives the same latents on
every device and in every epoch of a run.
"""

import torch

from dgm_cli.errors import DgmError
from dgm_cli.models.conditioning import check_labels, class_rows
from dgm_cli.plots import Figure


@torch.no_grad()
def sample_images(
    model,
    n: int,
    *,
    seed: int,
    binary: bool = False,
    raw: bool = False,
    temperature: float = 1.0,
    labels: torch.Tensor | None = None,
    **sampler_options,
) -> torch.Tensor:
    """n images (n, 1, 28, 28) in [0, 1].

    binary: a Bernoulli draw from each pixel's probability; raw: the live weights of a model that
    also keeps a moving average of them; temperature: the standard deviation of the latent draws;
    labels (n,): each image's class, for a conditional model (left out: every class in turn);
    sampler_options: an iterative sampler's choices (model.sample).
    """
    if raw and not model.keeps_average:
        raise DgmError("this checkpoint keeps no moving average of its weights (train with --ema); leave out --raw")
    generator = torch.Generator().manual_seed(seed)
    images = model.sample(
        n, generator=generator, averaged=not raw, temperature=temperature, labels=labels, **sampler_options
    )
    broken = int((~torch.isfinite(images)).flatten(1).any(1).sum())
    if broken:
        raise DgmError(f"the model drew {broken} of {n} images with NaN or infinite pixels; nothing was written")
    if binary:
        if model.pixel_distribution != "bernoulli":
            raise DgmError("binary draws need a model with Bernoulli pixels (the vae); leave out --binary")
        images = torch.bernoulli(images.cpu(), generator=generator)
    return images


def sample_figure(
    model, n: int, *, label: int | None = None, nrow: int | None = None, seed: int = 0, reporter=None, **options
) -> Figure:
    """`dgm sample`'s grid: n samples (of class `label`; a conditional model without one: a row per class with
    ceil(n / classes) images each), with a bar over an iterative sampler's steps. options: sample_images'."""
    from dgm_cli.progress import Reporter
    from dgm_cli.scoring import draw_with_progress

    labels, described = (torch.full((n,), label), f" of class {label}") if label is not None else (None, "")
    if labels is None and model.classes:  # a conditional model: one row per class
        labels, per_class = class_grid(model, n)
        n, nrow, described = len(labels), nrow or per_class, f", one row per class ({per_class} each)"
    images = draw_with_progress(model, n, reporter or Reporter(), seed=seed, labels=labels, **options)
    return Figure(images, nrow, f"{n} samples{described}")


def class_grid(model, n: int) -> tuple[torch.Tensor | None, int | None]:
    """For a conditional model: labels for a grid of one row per class, ceil(n / classes) images a row, and
    that row length; for an unconditional one (None, None), a square grid of n."""
    if not model.classes:
        return None, None
    per_class = -(-n // model.classes)
    return class_rows(model.classes, per_class), per_class


@torch.no_grad()
def manifold_images(model, grid: int, *, edge: float = 0.05, label: int | None = None) -> torch.Tensor:
    if "manifold" not in model.capabilities:
        raise DgmError(f"{type(model).__name__} has no latent manifold to draw")
    if model.latent_dim != 2:
        raise DgmError(
            f"the manifold needs a 2-D latent space, but this checkpoint has {model.latent_dim} latent dimensions; "
            "train one with --zdim 2"
        )
    if model.classes and label is None:
        raise DgmError(f"a conditional model's manifold is drawn for one class: add --label (0..{model.classes - 1})")
    check_labels(None if label is None else torch.tensor([label]), model.classes)
    model.eval()
    return model.manifold(grid, edge, label=label)
