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

METHODS = ("linear", "slerp")


def interpolate(a: torch.Tensor, b: torch.Tensor, steps: int, method: str) -> torch.Tensor:
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


def image_endpoints(model, images: torch.Tensor, rows: int, *, seed: int, index_a: int | None, index_b: int | None,
                    labels: torch.Tensor | None = None):  # fmt: skip
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
    prepared = model.prepare_split(images[indices], train=False, generator=torch.Generator().manual_seed(seed))
    own = labels[indices] if model.classes else None
    with torch.no_grad():
        latents = model.encode_images(prepared.to(model.device), own).cpu()
    pair_labels = None if own is None else own.view(-1, 2)
    return latents[0::2], latents[1::2], [tuple(i % count for i in pair) for pair in pairs], pair_labels


@torch.no_grad()
def interpolation_images(model, starts: torch.Tensor, ends: torch.Tensor, *, steps: int, method: str,
                         row_labels: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """Rows of decoded interpolations, (rows * (steps + 2), 1, 28, 28), row-major.

    row_labels (rows,): for a conditional model, the class each row is decoded as, held along its walk."""
    if "latent" not in model.capabilities:
        raise DgmError(f"{type(model).__name__} has no latent space to interpolate in")
    model.eval()
    paths = torch.cat([interpolate(a, b, steps, method) for a, b in zip(starts, ends)])
    labels = None if row_labels is None else row_labels.repeat_interleave(steps + 2)
    return model.decode_images(paths.to(model.device), labels)


@torch.no_grad()
def class_sweep_images(model, latents: torch.Tensor) -> torch.Tensor:
    """Each latent (rows, d) decoded as every class of a conditional model in turn: rows of `classes` images,
    the latent (the style) held, the label changed."""
    if not model.classes:
        raise DgmError("--across-classes changes the label of a conditional model; this checkpoint is unconditional")
    model.eval()
    z = latents.repeat_interleave(model.classes, dim=0).to(model.device)
    return model.decode_images(z, torch.arange(model.classes).repeat(len(latents)))


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
    model.eval()
    wanted = {digit: rows * (2 if classes[0] == classes[1] else 1) for digit in classes}
    found = {digit: [] for digit in classes}
    generator = torch.Generator().manual_seed(seed)
    drawn = 0
    while any(len(found[d]) < wanted[d] for d in classes) and drawn < budget:
        z = torch.randn(1000, model.latent_dim, generator=generator)
        probabilities = torch.softmax(classifier(model.decode_images(z.to(model.device)).to(classifier.device)), 1).cpu()
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
