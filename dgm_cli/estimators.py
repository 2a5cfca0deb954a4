"""Likelihood estimators for latent-variable models, and bits per dimension.

For an image x and k draws z_i from a proposal r, with weights
w_i = p(x, z_i) / r(z_i), the estimate log (1/k) sum_i w_i is a stochastic
lower bound on log p(x) that tightens as k grows:

* prior Monte-Carlo (seed 1.4): r = p(z), so w_i = p(x | z_i). Almost every
  prior draw explains x badly, so a handful of weights dominate: loose and noisy.
* importance-weighted (Burda et al. 2016): r = q(z | x). Its mean over the
  same draws, (1/k) sum_i log w_i, is the ELBO, and by Jensen the
  importance-weighted estimate is never below it, image by image.

Each estimator also reports the effective sample size (sum w)^2 / sum w^2
averaged over images: near 1 means the estimate rests on a single draw.
Everything streams over chunks of draws with a running log-sum-exp, so 5,000
draws per image need no more memory than 50.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from dgm_cli.data import PIXELS
from dgm_cli.errors import DgmError

# Draws decoded at once are capped so that one chunk's logits stay near 8 MB of float32: small enough for the
# allocator to reuse the same memory chunk after chunk instead of mapping fresh pages (a 32 MB chunk spent a
# third of a 5,000-draw evaluation in the kernel), large enough for efficient matrix products
# (benchmarks/estimator_speed.py compares chunk sizes against the arithmetic floor).
CHUNK_ELEMENTS = 2_000_000
VALIDATION_BATCH = 1000


@torch.no_grad()
def validate(model, images: torch.Tensor, labels: torch.Tensor, *, prefix: str, parallel=None) -> dict[str, float]:
    """The means of a model's validation_step metrics over a prepared split, in eval mode.

    parallel (a distributed.Parallel under torchrun): each process takes its rows of every batch, with
    the batch's noise drawn as one process would (model.shard), and the sums are added over processes.
    """
    was_training = model.training
    model.eval()
    sums = {}
    for start in range(0, len(images), VALIDATION_BATCH):
        batch, batch_labels = images[start : start + VALIDATION_BATCH], labels[start : start + VALIDATION_BATCH]
        if parallel is not None and parallel.enabled:
            rows = parallel.rows(len(batch))
            model.shard = parallel.shard(len(batch))
            batch, batch_labels = batch[rows], batch_labels[rows]
        # A process left without rows still runs the step: its noise draws keep the generators in step.
        for name, value in model.validation_step(batch, batch_labels).items():
            sums[name] = sums.get(name, 0) + (value * len(batch) if len(batch) else torch.zeros_like(value))
    model.shard = None
    model.train(was_training)
    if parallel is not None:
        sums = parallel.sum(sums, images.device)
    return read_means(sums, len(images), prefix=prefix)


def read_means(sums: dict[str, torch.Tensor], count: int, *, prefix: str) -> dict[str, float]:
    """Sums of per-batch means weighted by batch size -> means, with one host synchronisation."""
    values = torch.stack([sums[name].float() for name in sums]).cpu().tolist()
    return {f"{prefix}{name}": value / count for name, value in zip(sums, values)}


@dataclass(frozen=True)
class Estimate:
    """Per-image values of one estimator (nats) and, for sampling estimators, effective sample sizes."""

    label: str
    samples: int
    per_image: torch.Tensor  # float64 (N,)
    ess: torch.Tensor | None = None

    @property
    def mean(self) -> float:
        return self.per_image.mean().item()

    @property
    def standard_error(self) -> float | None:
        """None for a single image: a spread needs two (and JSON has no NaN)."""
        n = len(self.per_image)
        return self.per_image.std().item() / math.sqrt(n) if n > 1 else None

    def summary(self) -> dict:
        return {
            "label": self.label,
            "samples": self.samples,
            "nats": self.mean,
            "standard_error": self.standard_error,
            "bits_per_dim": bits_per_dim(self.mean),
            "bits_per_dim_standard_error": None
            if self.standard_error is None
            else self.standard_error / (PIXELS * math.log(2)),
            "mean_ess": None if self.ess is None else self.ess.mean().item(),
        }


def bits_per_dim(log_likelihood_nats: float, dims: int = PIXELS) -> float:
    """-log2 p(x) / D for a log-likelihood in nats."""
    return -log_likelihood_nats / (dims * math.log(2))


class RunningLogWeights:
    """Accumulates log-weights chunk by chunk: log mean w, mean log w, and the effective sample size."""

    def __init__(self, n_images: int, device: torch.device):
        self.count = 0
        self.log_sum = torch.full((n_images,), -math.inf, dtype=torch.float64, device=device)
        self.log_sum_sq = torch.full((n_images,), -math.inf, dtype=torch.float64, device=device)
        self.sum_log = torch.zeros(n_images, dtype=torch.float64, device=device)

    def add(self, log_weights: torch.Tensor) -> None:
        log_weights = log_weights.double()
        self.count += log_weights.shape[1]
        self.log_sum = torch.logaddexp(self.log_sum, torch.logsumexp(log_weights, dim=1))
        self.log_sum_sq = torch.logaddexp(self.log_sum_sq, torch.logsumexp(2 * log_weights, dim=1))
        self.sum_log += log_weights.sum(dim=1)

    def log_mean(self) -> torch.Tensor:
        return self.log_sum - math.log(self.count)

    def mean_log(self) -> torch.Tensor:
        return self.sum_log / self.count

    def effective_sample_size(self) -> torch.Tensor:
        return torch.exp(2 * self.log_sum - self.log_sum_sq)


@torch.no_grad()
def weigh(model, batch: torch.Tensor, k: int, proposal: str, labels: torch.Tensor | None = None) -> RunningLogWeights:
    """Draw k proposals for each image of `batch` (scored under `labels` by a conditional model), in chunks
    that bound memory."""
    running = RunningLogWeights(len(batch), batch.device)
    per_chunk = max(1, CHUNK_ELEMENTS // (len(batch) * PIXELS))
    draw = model.log_weight_draws(batch, proposal, labels)
    for start in range(0, k, per_chunk):
        running.add(draw(min(per_chunk, k - start)))
    return running


@torch.no_grad()
def latent_log_likelihood(
    model,
    images: torch.Tensor,
    *,
    iw_samples: int,
    mc_samples: int,
    batch_size: int = 100,
    on_batch: Callable[[int], None] | None = None,
    labels: torch.Tensor | None = None,
) -> dict[str, Estimate]:
    """ELBO, importance-weighted and (if mc_samples > 0) prior Monte-Carlo estimates of log p(x) for each image
    (of log p(x|y) with a conditional model's `labels`).

    `images` is a prepared split on the model's device; the caller seeds the global RNG.
    """
    elbo, weighted, prior, weighted_ess, prior_ess = [], [], [], [], []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        batch_labels = None if labels is None else labels[start : start + batch_size]
        posterior_draws = weigh(model, batch, iw_samples, "posterior", batch_labels)
        elbo.append(posterior_draws.mean_log().cpu())
        weighted.append(posterior_draws.log_mean().cpu())
        weighted_ess.append(posterior_draws.effective_sample_size().cpu())
        if mc_samples > 0:
            prior_draws = weigh(model, batch, mc_samples, "prior", batch_labels)
            prior.append(prior_draws.log_mean().cpu())
            prior_ess.append(prior_draws.effective_sample_size().cpu())
        if on_batch is not None:
            on_batch(len(batch))
    estimates = {
        "elbo": Estimate(f"ELBO (mean over {iw_samples} posterior draws)", iw_samples, torch.cat(elbo)),
        "importance_weighted": Estimate(
            f"importance-weighted, q(z|x), k={iw_samples}", iw_samples, torch.cat(weighted), torch.cat(weighted_ess)
        ),
    }
    if mc_samples > 0:
        estimates["prior_monte_carlo"] = Estimate(
            f"prior Monte-Carlo, p(z), k={mc_samples}", mc_samples, torch.cat(prior), torch.cat(prior_ess)
        )
    return estimates


def evaluate_images(
    model,
    images: torch.Tensor,
    *,
    seed: int,
    iw_samples: int,
    mc_samples: int,
    batch_size: int = 100,
    on_batch: Callable[[int], None] | None = None,
    labels: torch.Tensor | None = None,
) -> dict[str, Estimate]:
    """Estimate log p(x) (log p(x|y) under a conditional model's `labels`) for uint8 images: prepared
    (binarized) once with `seed`, then sampled with `seed`."""
    if "latent_likelihood" not in model.capabilities:
        raise DgmError(f"{type(model).__name__} has no latent-variable likelihood to estimate")
    model.eval()
    prepared = model.prepare_split(images, train=False, generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    return latent_log_likelihood(
        model,
        prepared.to(model.device),
        iw_samples=iw_samples,
        mc_samples=mc_samples,
        batch_size=batch_size,
        on_batch=on_batch,
        labels=None if labels is None else labels.to(model.device),
    )


@torch.no_grad()
def dequantized_log_likelihood(
    model,
    images: torch.Tensor,
    *,
    seed: int,
    draws: int,
    batch_size: int = 100,
    on_batch: Callable[[int], None] | None = None,
    labels: torch.Tensor | None = None,
) -> dict[str, Estimate]:
    """A flow's exact density at dequantised images, as bounds on the discrete log P(x) (log P(x|y) under a
    conditional flow's `labels`).

    "dequantized": the mean of log p(x + u) - log q(u|x) over `draws` draws per image
    from the model's dequantization q (uniform, or its learned q(u|x)), the figure
    papers report as bits/dim; with more than one draw also "importance_weighted",
    the log of the mean of p(x + u) / q(u|x), a tighter bound (q is the proposal
    over the unit cube at x).
    """
    if "exact_likelihood" not in model.capabilities:
        raise DgmError(f"{type(model).__name__} has no exact density to evaluate")
    model.eval()
    torch.manual_seed(seed)
    prepared = model.prepare_split(images, train=False, generator=torch.Generator().manual_seed(seed)).to(model.device)
    labels = None if labels is None else labels.to(model.device)
    mean_log, log_mean = [], []
    for start in range(0, len(prepared), batch_size):
        batch_labels = None if labels is None else labels[start : start + batch_size]
        running = weigh(model, prepared[start : start + batch_size], draws, "dequantization", batch_labels)
        mean_log.append(running.mean_log().cpu())
        log_mean.append(running.log_mean().cpu())
        if on_batch is not None:
            on_batch(len(prepared[start : start + batch_size]))
    estimates = {
        "dequantized": Estimate(f"{model.dequantization_name}, mean over {draws} draw(s)", draws, torch.cat(mean_log))
    }
    if draws > 1:
        estimates["importance_weighted"] = Estimate(
            f"importance-weighted over {draws} draws of the {model.dequantization_name}", draws, torch.cat(log_mean)
        )
    return estimates


@torch.no_grad()
def classification(model, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """Accuracy and loss of a classifier (the same computation its training records), plus per-class accuracy."""
    prepared = model.prepare_split(images, train=False, generator=torch.Generator()).to(model.device)
    labels = labels.to(model.device)
    overall = validate(model, prepared, labels, prefix="")
    model.eval()
    predictions = torch.cat([model(batch.float() / 255).argmax(1) for batch in prepared.split(VALIDATION_BATCH)])
    classes = model.head.out_features
    return {"images": len(images), **overall, "per_class_accuracy": per_class_accuracy(predictions, labels, classes)}


def per_class_accuracy(predictions: torch.Tensor, labels: torch.Tensor, classes: int = 10) -> list[float | None]:
    """The share of each class's images predicted as that class (None for a class without images)."""
    labels = labels.to(predictions.device)
    return [
        (predictions[labels == digit] == digit).double().mean().item() if (labels == digit).any() else None
        for digit in range(classes)
    ]


@torch.no_grad()
def timestep_bound(
    model,
    images: torch.Tensor,
    *,
    seed: int,
    timesteps: int,
    batch_size: int = 100,
    on_batch: Callable[[int], None] | None = None,
    labels: torch.Tensor | None = None,
) -> dict[str, Estimate]:
    """A diffusion model's variational bound on log P(x) of the 8-bit images (log P(x|y) with `labels`).

    The bound is -(prior_term + sum over t = 1..T of timestep_term(t)), each term an expectation over
    x_t ~ q(x_t | x0). With `timesteps` >= T every t is evaluated once per image (one draw of x_t each).
    With fewer, the decoder's term (t = 1, the largest and most variable) is always evaluated, and the
    other T - 1 steps are split into `timesteps` - 1 equal strata with one t drawn uniformly in each,
    weighted by its stratum's size: an unbiased estimate of the sum (stratified sampling) whose remaining
    variance from the choice of t is part of the per-image spread, and so of the standard error.
    """
    if "variational_bound" not in model.capabilities:
        raise DgmError(f"{type(model).__name__} has no timestep-wise variational bound")
    model.eval()
    T = model.timesteps
    every = timesteps >= T
    # Strata of 2..T: at least one, so that even K = 1 stays unbiased (t = 1 plus one t drawn from the rest).
    edges = torch.linspace(2, T + 1, max(timesteps, 2)).round().long().tolist() if not every else []
    generator = torch.Generator().manual_seed(seed)
    labels = None if labels is None else labels.to(model.device)
    bounds = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(model.device)
        batch_labels = None if labels is None else labels[start : start + batch_size]
        rows = len(batch)
        total = model.prior_term(batch)
        if every:
            draws = [(torch.full((rows,), t, dtype=torch.long), 1.0) for t in range(1, T + 1)]
        else:
            draws = [(torch.ones(rows, dtype=torch.long), 1.0)] + [
                (torch.randint(low, high, (rows,), generator=generator), float(high - low))
                for low, high in zip(edges[:-1], edges[1:])
                if high > low
            ]
        for t, weight in draws:
            eps = torch.randn(rows, 1, *images.shape[1:], generator=generator)
            total = total + weight * model.timestep_term(batch, t.to(model.device), eps.to(model.device), batch_labels)
        bounds.append(-total.cpu())
        if on_batch is not None:
            on_batch(rows)
    how = f"all {T} terms" if every else f"t = 1 and {len(draws) - 1} stratified timesteps per image (unbiased)"
    return {"variational_bound": Estimate(f"variational bound, {how}", len(draws), torch.cat(bounds).double())}
