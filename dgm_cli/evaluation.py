"""The evaluation pipeline: `dgm eval`, `dgm reproduce` and `dgm.evaluate` all run this one implementation.

What a model is evaluated on follows from what it can do (its capabilities):
a classifier's accuracy; a likelihood from the estimator that fits the model
(`likelihood_estimator`: the VAE's ELBO, importance-weighted and prior
Monte-Carlo estimates, a flow's exact density at dequantized images, a
diffusion model's variational bound), for a conditional model also every image
under every class; and, for a model that samples, sample quality in the
feature space of a classifier that fits the data, beside the real-data floor.
The report is one JSON-ready dict per section; `EvaluationReport.to_dict()` is
what `dgm eval --json` prints.
"""

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dgm_cli.data import Dataset, load_dataset, trained_dataset
from dgm_cli.errors import DgmError
from dgm_cli.estimators import classification, dequantized_log_likelihood, evaluate_images, timestep_bound
from dgm_cli.evaluation_budget import DEFAULT_MINUTES
from dgm_cli.models.base import as_uint8_images
from dgm_cli.progress import Reporter
from dgm_cli.registry import get_spec, preset_of

SPLITS = ("train", "val", "test")


@dataclass
class EvaluationReport:
    """What an evaluation found, section by section (None: not evaluated). Numbers are nats per image and
    bits per dimension for likelihoods; see docs/metrics.md for the sample-quality metrics."""

    model: str
    checkpoint: str | None
    dataset: str
    split: str
    seed: int
    subset: dict | None = None  # --limit: the seeded random subset of the split that was evaluated
    budget: dict | None = None  # --minutes: the budget, and the seconds measured for this and the full protocol
    classification: dict | None = None  # accuracy (0..1), per-class accuracy, images
    likelihood: dict | None = None  # images, conditional, and one summary per estimate (nats, bits/dim, s.e.)
    published: dict | None = None  # the checkpoint's preset: the published number beside dgm's
    class_mixture: dict | None = None  # a conditional model: log p(x) over all classes, the generative classifier
    sample_quality_skipped: str | None = None  # why no feature network measured the samples
    feature_network: dict | None = None  # the classifier whose features the metrics use, with its weights' SHA-256
    sample_quality: dict | None = None  # FID, KID, precision/recall, IS, class coverage; model and real floor
    conditional_quality: dict | None = None  # a conditional model: accuracy of the drawn classes, per-class quality
    notes: list[str] = field(default_factory=list, repr=False)  # status lines for a person, not in to_dict

    def to_dict(self) -> dict:
        """The report as `dgm eval --json` prints it: the sections evaluated, in order."""
        return {key: value for key, value in self.__dict__.items() if value is not None and key != "notes"}


def evaluation_data(model, data: "str | Path | Dataset | None", data_dir, reporter: Reporter) -> Dataset:
    """The data to evaluate `model` on: a Dataset as given; a name or folder; or, left out (or the name the
    model was trained on), the data it was trained on, split as they were and checked by content."""
    if isinstance(data, Dataset):
        return data
    recorded = model.data_facts
    if data is not None and (data != recorded.get("name") or recorded.get("kind") == "image-folder"):
        return reporter.read_data(lambda progress: load_dataset(str(data), data_dir, progress=progress))
    if not recorded:
        raise DgmError("this model records no training data (it was not loaded from a checkpoint); pass data=")
    return reporter.read_data(
        lambda progress: trained_dataset(recorded, data_dir, what=str(model.path), progress=progress)
    )


def likelihood_estimator(
    model,
    *,
    iw_samples: int = 1000,
    mc_samples: int = 1000,
    dequantization_draws: int | None = None,
    bound_timesteps: int = 50,
):
    """The likelihood estimator that fits the model, with its number of draws, as a function
    (model, images, *, seed, batch_size, on_batch, labels) -> {name: Estimate}; None when these options skip
    it or the model has no likelihood. A flow's draws default to its preset's protocol (8), else 1."""
    if "latent_likelihood" in model.capabilities and iw_samples > 0:
        return functools.partial(evaluate_images, iw_samples=iw_samples, mc_samples=mc_samples)
    if "exact_likelihood" in model.capabilities:
        if dequantization_draws is None:
            preset = preset_of(get_spec(model.model_name), model.config)
            dequantization_draws = preset.protocol["samples"] if preset is not None else 1
        if dequantization_draws > 0:
            return functools.partial(dequantized_log_likelihood, draws=dequantization_draws)
    if "variational_bound" in model.capabilities and bound_timesteps > 0:
        return functools.partial(timestep_bound, timesteps=bound_timesteps)
    return None


def log_likelihood(
    model,
    images,
    *,
    labels=None,
    seed: int = 0,
    iw_samples: int = 1000,
    mc_samples: int = 1000,
    dequantization_draws: int | None = None,
    bound_timesteps: int = 50,
    batch_size: int = 100,
    reporter: Reporter | None = None,
) -> dict:
    """Estimates of log p(x) (log p(x|y) at a conditional model's `labels`) for each image, in nats.

    images: (N, 1, 28, 28) or (N, 28, 28), floats in [0, 1] or uint8. The estimator fits the model: the VAE's
    "elbo", "importance_weighted" (iw_samples posterior draws) and "prior_monte_carlo" (mc_samples prior draws,
    0 skips it); a flow's "dequantized" bound (and "importance_weighted" with dequantization_draws > 1); a
    diffusion model's "variational_bound" (bound_timesteps terms per image). Returns {name: Estimate}, each with
    per_image (float64, nats), mean, standard_error and summary() (with bits per dimension)."""
    estimator = likelihood_estimator(
        model,
        iw_samples=iw_samples,
        mc_samples=mc_samples,
        dequantization_draws=dequantization_draws,
        bound_timesteps=bound_timesteps,
    )
    if estimator is None:
        raise DgmError(f"the {model.model_name} has no likelihood to estimate with these options")
    pixels = as_uint8_images(images)
    if model.classes and labels is None:
        raise DgmError("a conditional model scores images under their labels: pass labels=")
    given = {"labels": torch.as_tensor(labels)} if model.classes else {}
    with (reporter or Reporter()).task("log-likelihood", total=len(pixels)) as advance:
        return estimator(model, pixels, seed=seed, batch_size=batch_size, on_batch=advance, **given)


def evaluated_rows(split_size: int, limit: int | None, seed: int) -> torch.Tensor:
    """The rows of a split that an evaluation reads: all of them in order, or with `limit` a random subset drawn
    with `seed`. Never the first N: a data file's order is not random (MNIST's test file is not), so its first
    images are a biased sample."""
    if limit is None or limit >= split_size:
        return torch.arange(split_size)
    return torch.randperm(split_size, generator=torch.Generator().manual_seed(seed))[:limit].sort().values


def evaluate(
    model,
    data=None,
    *,
    split: str = "test",
    iw_samples: int = 1000,
    mc_samples: int = 1000,
    dequantization_draws: int | None = None,
    bound_timesteps: int = 50,
    samples: int | None = None,
    raw: bool = False,
    temperature: float = 1.0,
    limit: int | None = None,
    minutes: float | None = DEFAULT_MINUTES,
    batch_size: int = 100,
    seed: int = 0,
    classifier: Path | None = None,
    data_dir: Path | None = None,
    reporter: Reporter | None = None,
    **sampler_options,
) -> EvaluationReport:
    """Evaluate a model as `dgm eval` does, with its options as keyword arguments; returns an EvaluationReport.

    data: a dataset name, an image folder or a Dataset; left out, the data the model was trained on.
    split: "train", "val" or "test". limit: a random subset of N images of the split (drawn with `seed`, the
    same for every estimator, recorded as the report's "subset"). samples: images drawn for
    the sample-quality metrics (0 skips them; the full protocol's 10,000, or what the budget affords).
    minutes: the budget, by default about a minute: the split's subset and the samples not given are sized to
    fit it from measured costs (the whole split and 10,000 samples when they fit; evaluation_budget.py); None
    runs the full protocol however long it takes (`dgm eval --full`). classifier: a checkpoint whose features
    measure them (default: the shipped one that fits the data). sampler_options: an iterative sampler's
    (sampler, steps, eta, guidance). The other options are `dgm eval --help`'s."""
    started = time.perf_counter()  # a budget counts reading the data and measuring the costs
    reporter = reporter or Reporter()
    sampler_options = {name: value for name, value in sampler_options.items() if value is not None}
    model.check_sampler_options(sampler_options)
    if split not in SPLITS:
        raise DgmError(f"unknown split {split!r}; choose {', '.join(SPLITS)}")
    if raw and not model.keeps_average:
        raise DgmError("this checkpoint keeps no moving average of its weights (train with --ema); leave out --raw")
    if raw:
        model.check_live_weights()
    dataset = evaluation_data(model, data, data_dir, reporter)
    path = None if model.path is None else str(model.path)
    report = EvaluationReport(model.model_name, path, dataset.name, split, seed)
    chosen = dataset.split(split)
    estimator = likelihood_estimator(
        model,
        iw_samples=iw_samples,
        mc_samples=mc_samples,
        dequantization_draws=dequantization_draws,
        bound_timesteps=bound_timesteps,
    )
    sizes = {"limit": limit, "samples": samples, "minutes": minutes, "started": started, "seed": seed}
    sizes["batch_size"] = batch_size
    limit, samples = size_the_evaluation(
        report,
        model,
        estimator,
        chosen,
        **sizes,
        sampler_options=sampler_options,
        raw=raw,
        reporter=reporter,
        embedder=lambda: sample_embedder(model, dataset, classifier),
    )
    rows = evaluated_rows(len(chosen), limit, seed)
    images, labels = chosen.images[rows], chosen.labels[rows]
    if len(rows) < len(chosen):
        report.subset = {"images": len(rows), "of": len(chosen), "seed": seed, "how": "seeded random subset"}
    if len(rows) < len(chosen) and report.budget is None:  # a budget's note has said it
        reporter.note(
            f"evaluating a random subset of {len(rows):,} of the {split} split's {len(chosen):,} images "
            f"(seed {seed}); leave out --limit for all of them"
        )
    if "classifier" in model.capabilities:
        report.classification = classification(model, images, labels)
    if estimator is not None:
        estimate_likelihoods(report, estimator, model, dataset, images, labels, len(chosen), batch_size, reporter)
    if "sample" in model.capabilities and samples > 0:
        from dgm_cli.scoring import evaluate_samples

        evaluate_samples(
            report,
            model,
            dataset,
            samples=samples,
            seed=seed,
            raw=raw,
            temperature=temperature,
            classifier=classifier,
            reporter=reporter,
            sampler_options=sampler_options,
        )
    if (
        report.classification is None
        and report.likelihood is None
        and report.sample_quality is None
        and report.sample_quality_skipped is None
    ):
        raise DgmError(f"nothing to evaluate for the {model.model_name} with these options")
    return report


def sample_embedder(model, dataset: Dataset, classifier):
    """What measures samples: images -> the feature network's embedding; None when no network fits the data
    (the evaluation then skips sample quality)."""
    from dgm_cli.feature_network import feature_network
    from dgm_cli.metrics import embed

    features = feature_network(dataset.describe(), model.device, classifier=classifier)
    return None if features is None else functools.partial(embed, features.classifier)


def size_the_evaluation(
    report,
    model,
    estimator,
    chosen,
    *,
    limit,
    samples,
    minutes,
    started,
    seed,
    batch_size,
    sampler_options,
    raw,
    reporter,
    embedder,
) -> tuple[int | None, int]:
    """(limit, samples) for the evaluation: as given; with `minutes`, what of the rest fits the budget left
    since `started` (the full protocol when it fits); without, the full protocol (the whole split, 10,000
    samples), said before it starts when it is long (evaluation_budget.py)."""
    from dgm_cli import evaluation_budget as budget

    sampling = "sample" in model.capabilities and samples != 0
    asked = budget.FULL_SAMPLES if samples is None else samples
    to_size = (estimator is not None and limit is None) or (sampling and samples is None)
    long_enough = (estimator is not None and (limit or len(chosen)) >= budget.PROBED_WHEN) or (
        sampling and asked >= budget.PROBED_WHEN
    )
    worth_measuring = to_size if minutes is not None else long_enough
    if not worth_measuring:
        return limit, asked
    rows = evaluated_rows(len(chosen), budget.PROBE_IMAGES, seed)
    costs = budget.measure_costs(
        model,
        estimator,
        chosen.images[rows],
        chosen.labels[rows],
        samples=sampling,
        batch_size=batch_size,
        sampler_options=sampler_options,
        raw=raw,
        embedder=embedder() if sampling else None,
        reference_images=len(chosen),
    )
    full = costs.seconds(len(chosen), budget.FULL_SAMPLES if sampling else 0)
    if minutes is None:
        expected = costs.seconds(limit or len(chosen), asked if sampling else 0)
        if expected > budget.WORTH_SAYING_SECONDS:
            reporter.note(
                f"this evaluation takes about {budget.minutes_text(expected)} here; without --full it answers in "
                "about a minute from a random subset of the images and fewer samples"
            )
        return limit, asked
    left = budget.AIMED_SHARE * (60 * minutes - (time.perf_counter() - started))
    sized_limit, sized_samples = budget.fit_budget(
        costs, left, len(chosen), limit=limit, samples=samples if sampling else 0
    )
    expected = costs.seconds(sized_limit or len(chosen), sized_samples)
    reduced = (limit is None and sized_limit is not None) or (samples is None and sized_samples < asked)
    report.budget = {
        "minutes": minutes,
        "expected_seconds": round(expected, 1),
        "full_protocol_seconds": round(full, 1),
        "full_protocol": not reduced,
    }
    if reduced:
        parts = []
        if costs.per_image is not None:
            parts.append(
                f"{sized_limit:,} of the {len(chosen):,}" if sized_limit is not None else f"all {len(chosen):,}"
            )
            parts[-1] += f" {report.split} images"
        if sampling:
            parts.append(f"{sized_samples:,} samples")
        reporter.note(
            f"fitting {minutes:g} minute{'' if minutes == 1 else 's'}: {' and '.join(parts)}, about "
            f"{budget.minutes_text(expected)}; the full protocol (--full) takes about {budget.minutes_text(full)} here"
        )
    return sized_limit, sized_samples


def estimate_likelihoods(
    report: EvaluationReport,
    estimator,
    model,
    dataset: Dataset,
    images,
    labels,
    split_size: int,
    batch_size: int,
    reporter: Reporter,
) -> None:
    """The likelihood section, the published comparison of the model's preset and, for a conditional model
    (scored at the images' own labels, log p(x|y)), the class mixture."""
    from dgm_cli.presets import comparison

    given = {"labels": labels} if model.classes else {}
    with reporter.task(f"log-likelihood, {report.split} images", total=len(images)) as advance:
        estimates = estimator(model, images, seed=report.seed, batch_size=batch_size, on_batch=advance, **given)
    for estimate in estimates.values():
        broken = (~torch.isfinite(estimate.per_image)).nonzero().flatten()
        if len(broken):
            raise DgmError(
                f"the {estimate.label} is not finite for {len(broken)} of {len(images)} images (the first: image "
                f"{int(broken[0])} of those evaluated); the model computes NaN or infinity on them, so no number is "
                "reported"
            )
    report.likelihood = {
        "images": len(images),
        "conditional": bool(model.classes),
        **{name: estimate.summary() for name, estimate in estimates.items()},
    }
    report.published = comparison(get_spec(model.model_name), model.config, report.to_dict(), split_size=split_size)
    if model.classes:
        from dgm_cli.conditional import class_mixture, label_log_prior

        prior = label_log_prior(dataset.split("train").labels, model.classes)
        with reporter.task(
            f"log p(x|y) for each of {model.classes} classes", total=len(images) * model.classes
        ) as advance:
            report.class_mixture = class_mixture(
                estimator,
                model,
                images,
                labels,
                log_prior=prior,
                seed=report.seed,
                batch_size=batch_size,
                on_batch=advance,
            )
