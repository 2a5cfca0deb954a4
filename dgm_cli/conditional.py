"""What `dgm eval` adds for a conditional model (trained with --conditional): does it draw the class it is
asked for, how good is each class's sample, and what do its class-conditional likelihoods say.

* Conditional accuracy: the share of the samples drawn for label y that the shipped classifier assigns
  to y, per class and overall, beside the same classifier's accuracy on real test images (the ceiling
  a perfect conditional generator would reach in that classifier's eyes).
* Sample quality per class: FID, KID, precision and recall of class y's samples against the real test
  images of class y, beside held-out real images of that class (metrics.py's floor).
* The class mixture: every image scored under every class, log p(x|y) for y = 0..9, gives
    log p(x) = log sum_y p(x|y) p(y),   p(y) = the training split's label frequencies,
  the unconditional likelihood, comparable with an unconditional model's number; and the generative
  classifier argmax_y p(x|y) p(y), whose test accuracy is reported. The per-class scores are the
  estimator's importance-weighted (log-mean) estimates, so sum_y p^(x|y) p(y) is an unbiased estimate of
  p(x) and its log a stochastic lower bound on log p(x), like the unconditional estimates. Every class
  uses the same seed: the same noise, so the classes are compared on common draws.
"""

from collections.abc import Callable

import torch

from dgm_cli.estimators import Estimate, per_class_accuracy
from dgm_cli.metrics import quality

PER_CLASS_METRICS = ("fid", "kid", "kid_std", "precision", "recall")


def label_log_prior(train_labels: torch.Tensor, classes: int) -> torch.Tensor:
    """log p(y): the training split's label frequencies, float64 (classes,)."""
    counts = torch.bincount(train_labels.cpu(), minlength=classes).double()
    return (counts / counts.sum()).log()


def scored_estimate(estimates: dict[str, Estimate]) -> str:
    """The per-image estimate whose exponential is unbiased for p(x|y): the importance-weighted one when there
    is one (several draws), else the flow's one-draw dequantized value (a single importance weight)."""
    for name in ("importance_weighted", "dequantized"):
        if name in estimates:
            return name
    return "variational_bound"  # a diffusion model's: exp of a lower bound, so the mixture stays a lower bound


@torch.no_grad()
def class_mixture(
    estimator: Callable,
    model,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    log_prior: torch.Tensor,
    seed: int,
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> dict:
    """Every image scored under every class by `estimator` (an estimators.py likelihood function): the mixture
    log p(x), log p(x|y) at the true labels, and the generative classifier's accuracy."""
    columns, name, samples = [], None, 0
    for label in range(model.classes):
        estimates = estimator(
            model, images, seed=seed, batch_size=batch_size, on_batch=on_batch, labels=torch.full((len(images),), label)
        )
        name = scored_estimate(estimates)
        columns.append(estimates[name].per_image)
        samples = estimates[name].samples
    scores = torch.stack(columns, dim=1)  # (N, classes): log p(x|y)
    joint = scores + log_prior[None, :]
    predictions = joint.argmax(dim=1)
    labels = labels.cpu()
    accuracy = (predictions == labels).double().mean().item()
    draws = f"{name.replace('_', '-')}, {samples} draw{'' if samples == 1 else 's'}"
    own = Estimate(f"log p(x|y) at the true label ({draws})", samples, scores[torch.arange(len(labels)), labels])
    mixture = Estimate(f"log p(x) = log sum_y p(x|y) p(y) ({draws})", samples, torch.logsumexp(joint, dim=1))
    return {
        "images": len(images),
        "estimate": name,
        "label_prior": log_prior.exp().tolist(),
        "conditional": own.summary(),
        "mixture": mixture.summary(),
        "generative_classifier": {
            "accuracy": accuracy,
            "per_class_accuracy": per_class_accuracy(predictions, labels, model.classes),
        },
    }


@torch.no_grad()
def conditional_quality(
    samples: tuple,
    sample_labels: torch.Tensor,
    *,
    reference: tuple,
    reference_labels: torch.Tensor,
    held_out: tuple,
    held_out_labels: torch.Tensor,
) -> dict:
    """Conditional accuracy of the samples drawn for each label, and each class's sample quality.

    samples, reference (the evaluated split: the classifier's accuracy on real images and each class's
    reference set) and held_out (each class's real-data floor): metrics.embed's (features, probabilities) of
    each set, embedded once for the whole evaluation.
    """
    classes = int(sample_labels.max()) + 1
    sample_labels, reference_labels, held_out_labels = (
        sample_labels.cpu(),
        reference_labels.cpu(),
        held_out_labels.cpu(),
    )
    (sample_features, probabilities), (reference_features, real_probabilities) = samples, reference
    held_out_features, held_out_probabilities = held_out
    drawn = probabilities.argmax(dim=1)
    real = real_probabilities.argmax(dim=1)
    per_class = []
    for label in range(classes):
        mine, theirs, floor = sample_labels == label, reference_labels == label, held_out_labels == label
        count = int(mine.sum())
        # The floor with as many held-out images as there are samples, as metrics.sample_quality does.
        floor_features, floor_probabilities = held_out_features[floor][:count], held_out_probabilities[floor][:count]
        model = quality(sample_features[mine], probabilities[mine], reference_features[theirs])
        real_floor = quality(floor_features, floor_probabilities, reference_features[theirs])
        per_class.append(
            {
                "label": label,
                "samples": count,
                "reference_images": int(theirs.sum()),
                "model": {name: model[name] for name in PER_CLASS_METRICS},
                "real_floor": {name: real_floor[name] for name in PER_CLASS_METRICS},
            }
        )
    return {
        "accuracy": (drawn == sample_labels).double().mean().item(),
        "per_class_accuracy": per_class_accuracy(drawn, sample_labels, classes),
        "real_accuracy": (real == reference_labels).double().mean().item(),
        "real_per_class_accuracy": per_class_accuracy(real, reference_labels, classes),
        "per_class_quality": per_class,
    }
