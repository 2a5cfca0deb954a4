"""Walking through a model's latent space between two endpoints (seed 2.7).

Endpoints are prior draws (seeded), or the posterior means of two real images
for models with an encoder. Linear interpolation cuts through the middle of a
high-dimensional Gaussian, where its mass is not: a point halfway between two
draws of N(0, I) in d dimensions has norm about sqrt(d/2) instead of sqrt(d).
Spherical interpolation (slerp) keeps the norm, so every intermediate latent
looks like a typical draw.
"""

import math

import torch

from dgm_cli.errors import DgmError
from dgm_cli.models.conditioning import check_labels
from dgm_cli.plots import Figure

METHODS = ("linear", "slerp")


def path_between(a: torch.Tensor, b: torch.Tensor, steps: int, method: str) -> torch.Tensor:
    """steps + 2 points from a to b inclusive, (steps + 2, d); the ends are a and b exactly."""
    t = torch.linspace(0, 1, steps + 2, dtype=a.dtype, device=a.device)[:, None]
    if method == "linear":
        return torch.lerp(a, b, t)
    if method != "slerp":
        raise ValueError(f"unknown interpolation method {method!r}")
    cosine = torch.dot(a, b) / (a.norm() * b.norm())
    omega = torch.arccos(cosine.clamp(-1, 1))
    if math.sin(omega.item()) < 1e-6:  # (anti)parallel endpoints: the great circle is not unique
        return torch.lerp(a, b, t)
    path = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)
    path[0], path[-1] = a, b  # exact ends, whatever the rounding
    return path


def prior_endpoints(latent_dim: int, rows: int, *, seed: int, seed_a: int | None, seed_b: int | None):
    """(rows, d) pairs of standard-normal endpoints; row r uses seed_a + r and seed_b + r when given."""
    shared = torch.Generator().manual_seed(seed)

    def draw(fixed: int | None, row: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(fixed + row) if fixed is not None else shared
        return torch.randn(latent_dim, generator=generator)

    starts, ends = zip(*[(draw(seed_a, row), draw(seed_b, row)) for row in range(rows)])
    return torch.stack(starts), torch.stack(ends)


def image_endpoints(
    model,
    images: torch.Tensor,
    rows: int,
    *,
    seed: int,
    index_a: int | None,
    index_b: int | None,
    labels: torch.Tensor | None = None,
    **sampler_options,
):
    """Posterior means of pairs of images: the given indices, or distinct random ones per row.

    A conditional model encodes each image with its own label (`labels`, the split's); the pairs' labels
    come back as a fourth value (None for an unconditional model)."""
    if "encoder" not in model.capabilities:
        raise DgmError(f"{type(model).__name__} has no encoder to map images to latents; leave out --from-images")
    count = len(images)
    for index in (index_a, index_b):
        if index is not None and not 0 <= index < count:
            raise DgmError(f"image index {index} is outside the split, which holds {count} images (0..{count - 1})")
    generator = torch.Generator().manual_seed(seed)
    pairs = []
    for row in range(rows):
        random_a, random_b = torch.randperm(count, generator=generator)[:2].tolist()
        pairs.append((random_a if index_a is None else index_a + row, random_b if index_b is None else index_b + row))
    indices = torch.tensor([i % count for pair in pairs for i in pair])
    own = labels[indices] if model.classes else None
    latents = model.encode(images[indices], own, seed=seed, **sampler_options).cpu()
    pair_labels = None if own is None else own.view(-1, 2)
    return latents[0::2], latents[1::2], [tuple(i % count for i in pair) for pair in pairs], pair_labels


@torch.no_grad()
def interpolation_images(
    model,
    starts: torch.Tensor,
    ends: torch.Tensor,
    *,
    steps: int,
    method: str,
    row_labels: torch.Tensor | None = None,
    sampler_options: dict | None = None,
) -> torch.Tensor:
    """Rows of decoded interpolations, (rows * (steps + 2), 1, 28, 28), row-major.

    row_labels (rows,): for a conditional model, the class each row is decoded as, held along its walk;
    sampler_options: an iterative sampler's (model.decode)."""
    if "latent" not in model.capabilities:
        raise DgmError(f"{type(model).__name__} has no latent space to interpolate in")
    paths = torch.cat([path_between(a, b, steps, method) for a, b in zip(starts, ends)])
    labels = None if row_labels is None else row_labels.repeat_interleave(steps + 2)
    return model.decode(paths, labels, **(sampler_options or {}))


@torch.no_grad()
def class_sweep_images(model, latents: torch.Tensor, **sampler_options) -> torch.Tensor:
    """Each latent (rows, d) decoded as every class of a conditional model in turn: rows of `classes` images,
    the latent (the style) held, the label changed."""
    if not model.classes:
        raise DgmError("--across-classes changes the label of a conditional model; this checkpoint is unconditional")
    z = latents.repeat_interleave(model.classes, dim=0)
    return model.decode(z, torch.arange(model.classes).repeat(len(latents)), **sampler_options)


@torch.no_grad()
def class_endpoints(
    model, classifier, classes: tuple[int, int], rows: int, *, seed: int, confidence: float = 0.9, budget: int = 100_000
):
    """Prior draws that the classifier assigns to classes[0] and classes[1] with at least `confidence`.

    Draws come in batches from a generator seeded with `seed`; each row takes the next unused
    draw of each class, so a row never has the same latent at both ends.
    """
    if "latent" not in model.capabilities:
        raise DgmError(f"{type(model).__name__} has no latent space to interpolate in")
    wanted = {digit: rows * (2 if classes[0] == classes[1] else 1) for digit in classes}
    found = {digit: [] for digit in classes}
    generator = torch.Generator().manual_seed(seed)
    drawn = 0
    while any(len(found[d]) < wanted[d] for d in classes) and drawn < budget:
        z = torch.randn(1000, model.latent_dim, generator=generator)
        probabilities = torch.softmax(classifier(model.decode(z).to(classifier.device)), 1).cpu()
        best, label = probabilities.max(dim=1)
        for digit in found:
            found[digit].extend(z[(label == digit) & (best >= confidence)])
        drawn += len(z)
    for digit in classes:
        if len(found[digit]) < wanted[digit]:
            raise DgmError(
                f"in {drawn:,} prior draws the classifier was sure of only {len(found[digit])} '{digit}'s "
                f"(needed {wanted[digit]}); the model rarely draws that digit"
            )
    first, second = classes
    starts = found[first][:rows]
    ends = found[second][rows : 2 * rows] if first == second else found[second][:rows]
    return torch.stack(starts), torch.stack(ends)


def interpolate(
    model,
    start: torch.Tensor,
    end: torch.Tensor,
    *,
    steps: int = 7,
    method: str = "slerp",
    labels: torch.Tensor | None = None,
    denoising_steps: int | None = None,
    **sampler_options,
) -> torch.Tensor:
    """Images decoded along paths between latents: start and end (d,) or (rows, d), e.g. model.encode(images)
    or torch.randn(rows, model.latent_dim); returns (rows * (steps + 2), 1, 28, 28) in [0, 1], one row of
    steps + 2 images per pair, the ends included. method: "slerp" (keeps the norm) or "linear".
    labels (rows,): for a conditional model, the class each row is decoded as. denoising_steps and
    sampler_options (guidance): a diffusion model's deterministic DDIM decoder."""
    if method not in METHODS:
        raise DgmError(f"unknown interpolation method {method!r}; choose {' or '.join(METHODS)}")
    starts, ends = torch.atleast_2d(torch.as_tensor(start)).float(), torch.atleast_2d(torch.as_tensor(end)).float()
    if starts.shape != ends.shape or starts.shape[1] != getattr(model, "latent_dim", None):
        raise DgmError(
            f"start and end must be latents of {getattr(model, 'latent_dim', '?')} numbers each, of the "
            f"same shape; got {tuple(starts.shape)} and {tuple(ends.shape)}"
        )
    if labels is not None:
        labels = torch.as_tensor(labels).reshape(-1)
        check_labels(labels, model.classes)
    if denoising_steps is not None:
        sampler_options = {**sampler_options, "steps": denoising_steps}
    return interpolation_images(
        model, starts.cpu(), ends.cpu(), steps=steps, method=method, row_labels=labels, sampler_options=sampler_options
    )


def interpolation_figure(
    model,
    *,
    rows: int = 1,
    steps: int = 7,
    method: str = "slerp",
    seed: int = 0,
    seed_a: int | None = None,
    seed_b: int | None = None,
    classes: tuple[int, int] | None = None,
    classifier=None,
    from_images: bool = False,
    image_a: int | None = None,
    image_b: int | None = None,
    split: str = "test",
    label: int | None = None,
    across_classes: bool = False,
    data=None,
    data_dir=None,
    denoising_steps: int | None = None,
    **sampler_options,
) -> Figure:
    """`dgm interpolate`'s grid: rows of walks between endpoints that are prior draws (seeded), draws the
    classifier reads as the two `classes`, or real images (from_images); for a conditional model each row is
    decoded as `label` (else row r as class r), or with across_classes one latent per row as every class.
    denoising_steps and sampler_options (guidance): a diffusion model's DDIM decoder (and encoder)."""
    if denoising_steps is not None:
        sampler_options = {**sampler_options, "steps": denoising_steps}
    if from_images and classes is not None:
        raise DgmError("choose endpoints by --classes or by --from-images, not both")
    if across_classes and label is not None:
        raise DgmError("--across-classes shows every class; leave out --label")
    if "latent" not in model.capabilities:
        raise DgmError(f"the {model.model_name} has no latent space to interpolate in")
    model.check_sampler_options(sampler_options)
    if label is not None:
        check_labels(torch.tensor([label]), model.classes)
    if model.classes and classes is not None:
        raise DgmError(
            "a conditional model draws a class directly: use --label or --across-classes instead of --classes"
        )
    if (image_a is not None or image_b is not None) and not from_images:
        raise DgmError("--image-a and --image-b choose real images; add --from-images")
    if from_images:
        starts, ends, pairs, row_labels = endpoints_from_images(
            model, rows, seed, image_a, image_b, split, data, data_dir, sampler_options
        )
        described = f"{split} images " + ", ".join(f"{a}->{b}" for a, b in pairs)
    elif classes is not None:
        starts, ends, described = endpoints_of_classes(model, classes, rows, seed, classifier)
        row_labels = None
    else:
        starts, ends = prior_endpoints(model.latent_dim, rows, seed=seed, seed_a=seed_a, seed_b=seed_b)
        described, row_labels = "prior draws", None
    if across_classes:
        held = f"of {split} images " + ", ".join(str(a) for a, _ in pairs) if from_images else "a prior draw"
        return Figure(
            class_sweep_images(model, starts, **sampler_options),
            model.classes,
            f"{rows} row(s), each one latent ({held}) drawn as each of {model.classes} classes",
        )
    if model.classes:
        row_labels = (
            torch.full((rows,), label)
            if label is not None
            else row_labels
            if row_labels is not None
            else torch.arange(rows) % model.classes
        )
        described += ", as class " + ",".join(map(str, row_labels.tolist()))
    grid = interpolation_images(
        model, starts, ends, steps=steps, method=method, row_labels=row_labels, sampler_options=sampler_options
    )
    return Figure(grid, steps + 2, f"{rows} {method} interpolation(s) of {steps + 2} images between {described}")


def endpoints_from_images(model, rows, seed, image_a, image_b, split, data, data_dir, sampler_options):
    """Pairs of real images of the split, encoded; with their indices and, for a conditional model, the first
    image's class per row."""
    from dgm_cli.evaluation import evaluation_data
    from dgm_cli.progress import Reporter

    chosen = evaluation_data(model, data, data_dir, Reporter()).split(split)
    starts, ends, pairs, pair_labels = image_endpoints(
        model, chosen.images, rows, seed=seed, index_a=image_a, index_b=image_b, labels=chosen.labels, **sampler_options
    )
    return starts, ends, pairs, None if pair_labels is None else pair_labels[:, 0]


def endpoints_of_classes(model, classes: tuple[int, int], rows: int, seed: int, classifier):
    """Prior draws that the classifier of the model's data reads as the two classes."""
    from dgm_cli.feature_network import feature_network, missing_note

    features = feature_network(model.data_facts, model.device, classifier=classifier)
    if features is None:
        raise DgmError(missing_note(model.data_facts, "--classes").replace(" skipped:", " needs a classifier, and"))
    if max(classes) >= features.classes:
        raise DgmError(f"--classes {classes[0]},{classes[1]}: the classifier knows classes 0..{features.classes - 1}")
    starts, ends = class_endpoints(model, features.classifier, classes, rows, seed=seed)
    return starts, ends, f"prior draws {features.words()} reads as {classes[0]} and {classes[1]}"
