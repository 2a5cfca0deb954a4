"""An evaluation that fits a budget (`dgm eval`, by default a minute), and how long the full protocol takes.

The costs are measured, not guessed: the likelihood estimator runs on a few
images with the draws it will use, and the sampler draws a few images, each
on a forked random stream so the evaluation's own numbers are what they would
have been without the measurement. From them:
- with a budget (by default DEFAULT_MINUTES), how many images of the split (a
  seeded random subset, as --limit draws it) and how many samples fit what is
  left of it once the data are read and the costs measured: half each, or
  all of one part when it needs less than half and the rest for the other.
  What was asked explicitly (--limit, --samples) is kept; when the full
  protocol fits, it is what runs;
- without one (`--full`), the time the full protocol will take, printed
  before it starts when it is more than a minute and a half.

Fewer images widen the standard errors, which the report prints; fewer samples
raise FID (it depends on the count), and the real-data floor beside it is
measured on as many real images, so the two stay comparable.
"""

import time
from dataclasses import dataclass

import torch

PROBE_IMAGES = 20
PROBE_SAMPLES = 50
PROBE_METRICS = 1000  # random features the metrics' cost is timed on
KID_PROBE_ROWS = 250  # and KID's, on subsets of this many rows
FEWEST_IMAGES = 100  # a budget never evaluates fewer images than this (or the whole split when smaller)
FEWEST_SAMPLES = 1000  # nor draws fewer samples: FID on fewer is mostly its own bias
FULL_SAMPLES = 10_000
# The probes run small batches: a diffusion sampler's batches of 500 cost more an image than a probe's 50
# (memory traffic, not arithmetic), so the sizes aim at this share of what is left of the budget.
AIMED_SHARE = 0.85
DEFAULT_MINUTES = 1.0  # `dgm eval` and dgm.evaluate answer in about a minute unless told otherwise
WORTH_SAYING_SECONDS = 90  # an evaluation expected to take longer says so before it starts
PROBED_WHEN = 2000  # without a budget, only a split or a sample count this large is probed (small ones are quick)


@dataclass(frozen=True)
class Costs:
    """Measured seconds per evaluated image (for a conditional model: its image under every class too) and per
    sample (drawing it, embedding it and a real image of the floor); `fixed`: embedding the reference split,
    paid once when samples are measured at all. None where that part is not run."""

    per_image: float | None
    per_sample: float | None
    fixed: float = 0.0

    def seconds(self, images: int, samples: int) -> float:
        fixed = self.fixed if samples else 0.0
        return (self.per_image or 0.0) * images + (self.per_sample or 0.0) * samples + fixed


def measure_costs(
    model,
    estimator,
    images,
    labels,
    *,
    samples: bool,
    batch_size: int,
    sampler_options: dict,
    raw: bool,
    embedder=None,
    reference_images: int = 0,
) -> Costs:
    """Time the estimator on PROBE_IMAGES images and the sampler on PROBE_SAMPLES draws (each warmed up on a
    couple first, so a first call's set-up is not counted), on forked random streams; `embedder` (the feature
    network's embed, for `reference_images` real images once and two images per sample) on the draws."""
    devices = [model.device] if model.device.type == "cuda" else []
    per_image = per_sample = None
    fixed = 0.0
    with torch.random.fork_rng(devices=devices):
        if estimator is not None and len(images):
            given = {"labels": labels[:PROBE_IMAGES]} if model.classes else {}
            warm = {"labels": labels[:2]} if model.classes else {}
            estimator(model, images[:2], seed=0, batch_size=batch_size, **warm)
            probe = min(PROBE_IMAGES, len(images))
            started = time.perf_counter()
            estimator(model, images[:probe], seed=0, batch_size=batch_size, **given)
            per_image = (time.perf_counter() - started) / probe * (1 + model.classes)  # the class mixture too
        if samples:
            model.sample(2, seed=0, averaged=not raw, **sampler_options)
            started = time.perf_counter()
            drawn = model.sample(PROBE_SAMPLES, seed=0, averaged=not raw, **sampler_options)
            per_sample = (time.perf_counter() - started) / PROBE_SAMPLES
            if embedder is not None:
                embedder(drawn[:2])
                started = time.perf_counter()
                features, _ = embedder(drawn)
                per_embed = (time.perf_counter() - started) / PROBE_SAMPLES
                per_sample += 2 * per_embed
                fixed = per_embed * reference_images
                if model.classes:  # every held-out image is embedded for the class floors
                    fixed, per_sample = fixed + per_embed * reference_images, per_sample - per_embed
                metrics_per_sample, metrics_fixed = metric_costs(features.shape[1], reference_images, model.classes)
                per_sample, fixed = per_sample + metrics_per_sample, fixed + metrics_fixed
    return Costs(per_image, per_sample, fixed)


def metric_costs(dimensions: int, reference_images: int, classes: int) -> tuple[float, float]:
    """Measured (seconds per sample, fixed seconds) of the metrics, for the samples and for the floor against the
    reference split and, for a conditional model, each class's too. Timed on random features (what they cost
    does not depend on the values): precision/recall and FID on PROBE_METRICS samples, per sample; KID, whose
    100 random subsets stop growing at 1,000 images, as fixed, from a call on KID_PROBE_ROWS rows scaled by the
    square of the subset size, at the full sample count (fewer samples cost less: an overstatement, never an
    understatement)."""
    from dgm_cli.metrics import KID_SUBSET, frechet_distance, kernel_distance, precision_recall

    generator = torch.Generator().manual_seed(0)
    draw = lambda rows, columns: torch.randn(rows, columns, dtype=torch.float64, generator=generator)  # noqa: E731
    features, reference = draw(PROBE_METRICS, dimensions), draw(reference_images, dimensions)
    kernel_distance(features[:20], features[20:40])  # imports torchmetrics: not the metrics' cost

    def seconds(function, *arguments) -> float:
        started = time.perf_counter()
        function(*arguments)
        return time.perf_counter() - started

    def distances(reference_rows: int, rows: int) -> float:  # precision/recall and FID of `rows` samples
        return seconds(precision_recall, reference[:reference_rows], features[:rows]) + seconds(
            frechet_distance, reference[:reference_rows], features[:rows]
        )

    kid = seconds(kernel_distance, features[:KID_PROBE_ROWS], reference[:KID_PROBE_ROWS])
    kid_call = lambda subset: kid * (subset / KID_PROBE_ROWS) ** 2  # noqa: E731
    # Precision/recall's neighbour radii of the reference are paid whatever the count (a line through two counts
    # gives them apart), and the samples' own radii grow with the square of the count: as many at the full count.
    half, whole = distances(reference_images, PROBE_METRICS // 2), distances(reference_images, PROBE_METRICS)
    slope = max(whole - half, 0.0) / (PROBE_METRICS - PROBE_METRICS // 2)
    reference_radii = max(whole - slope * PROBE_METRICS, 0.0)
    samples_radii = reference_radii * (FULL_SAMPLES / max(reference_images, 1)) ** 2
    per_sample = 2 * slope
    fixed = 2 * (reference_radii + samples_radii) + 2 * kid_call(min(KID_SUBSET, FULL_SAMPLES, reference_images))
    if classes:
        one_class, class_reference = FULL_SAMPLES // classes, max(reference_images // classes, 1)
        timed = min(one_class, PROBE_METRICS)
        per_sample += 2 * classes * distances(class_reference, timed) * (one_class / timed) / FULL_SAMPLES
        fixed += 2 * classes * kid_call(min(KID_SUBSET, one_class, class_reference))
    return per_sample, fixed


def affordable(seconds: float, per_item: float, available: int, fewest: int) -> int:
    """How many items `seconds` buys at `per_item` each, in hundreds, between `fewest` and `available`."""
    count = int(seconds / max(per_item, 1e-9)) // 100 * 100
    return min(available, max(min(fewest, available), count))


def fit_budget(
    costs: Costs, seconds: float, split_size: int, *, limit: int | None, samples: int | None
) -> tuple[int | None, int]:
    """(limit, samples) for a budget of `seconds`: each not given is sized to its share of what the given ones
    leave (half each when both are measured, or all one part needs when that is less than half, the rest to the
    other); None for limit means the whole split."""
    size_images = limit is None and costs.per_image is not None
    size_samples = samples is None and costs.per_sample is not None
    left = seconds - costs.seconds(limit or 0, samples or 0)
    if size_samples:
        left -= costs.fixed  # the reference split is embedded whatever number of samples is drawn
    left = max(left, 0.0)
    image_seconds = sample_seconds = left
    if size_images and size_samples:
        whole_split, all_samples = costs.per_image * split_size, costs.per_sample * FULL_SAMPLES
        if whole_split <= left / 2:
            image_seconds, sample_seconds = whole_split, left - whole_split
        elif all_samples <= left / 2:
            image_seconds, sample_seconds = left - all_samples, all_samples
        else:
            image_seconds = sample_seconds = left / 2
    if size_images:
        limit = affordable(image_seconds, costs.per_image, split_size, FEWEST_IMAGES)
    if samples is None:
        samples = affordable(sample_seconds, costs.per_sample, FULL_SAMPLES, FEWEST_SAMPLES) if size_samples else 0
    return (None if limit is not None and limit >= split_size else limit), samples


def minutes_text(seconds: float) -> str:
    return f"{seconds / 60:.0f} minutes" if seconds >= 90 else f"{seconds:.0f} s"
