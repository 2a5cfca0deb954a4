"""Sample quality in the feature space of the shipped MNIST classifier.

Every number compares a set of generated images with the test images, and is
printed beside the same number for held-out real images (the validation
split against the test split): the floor a perfect generator would reach with
that many samples.

* FID and KID (torchmetrics, fed with our 128-d penultimate-layer features):
  distances between the two feature distributions; lower is better.
* Precision and recall (Kynkaanniemi et al. 2019): the share of generated
  images inside the k-nearest-neighbour balls of the real features
  (fidelity), and of real images inside the balls of the generated ones
  (coverage).
* Inception Score with the classifier: exp E_x KL(p(y|x) || p(y)), at most 10;
  high when each image is one confident digit and all digits appear.
* The class histogram of the samples, its entropy, and how many classes get at
  least 5% of the samples: mode collapse made visible.
"""

import math
import warnings
from pathlib import Path

import torch
from torch import nn

from dgm_cli.compatibility import require_torchvision
from dgm_cli.errors import DgmError
from dgm_cli.models.classifier import SHIPPED_CHECKPOINT

SHIPPED_CLASSIFIER = SHIPPED_CHECKPOINT
NEIGHBOURS = 3
CLASS_SHARE = 0.05
EMBED_BATCH = 1000
KID_SUBSET = 1000  # images in each of KID's 100 random subsets (fewer when a set is smaller)
DISTANCE_CHUNK = 1024


def load_classifier(device: torch.device | str = "cpu", path: Path = SHIPPED_CLASSIFIER):
    from dgm_cli.checkpoint import load_checkpoint

    if not Path(path).is_file():
        raise DgmError(f"the feature network {path} is missing; reinstall dgm or run `dgm train classifier`")
    return load_checkpoint(path, expected_model="classifier", device=device)[0]


@torch.no_grad()
def embed(classifier, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features (N, 128) and class probabilities (N, 10), float64 on the CPU, for images in [0, 1]."""
    classifier.eval()
    features, probabilities = [], []
    for start in range(0, len(images), EMBED_BATCH):
        batch = images[start : start + EMBED_BATCH].to(classifier.device, torch.float32)
        hidden = classifier.features(batch)
        features.append(hidden.double().cpu())
        probabilities.append(torch.softmax(classifier.head(hidden).double(), dim=1).cpu())
    return torch.cat(features), torch.cat(probabilities)


class PrecomputedFeatures(nn.Module):
    """Lets torchmetrics take features we computed once, instead of images it would embed again."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    require_torchvision()  # torchmetrics' image metrics import it
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=PrecomputedFeatures(real.shape[1]))
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return float(metric.compute())


def kernel_distance(real: torch.Tensor, fake: torch.Tensor, *, seed: int = 0) -> tuple[float, float]:
    """KID (cubic polynomial kernel, unbiased MMD^2) averaged over 100 random subsets: (mean, std)."""
    require_torchvision()
    from torchmetrics.image.kid import KernelInceptionDistance

    subset = min(KID_SUBSET, len(real), len(fake))
    with warnings.catch_warnings():  # it warns that it keeps all features in memory: 128 numbers an image is fine
        warnings.simplefilter("ignore")
        metric = KernelInceptionDistance(feature=PrecomputedFeatures(real.shape[1]), subset_size=subset)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    with torch.random.fork_rng():  # the subsets are random: seed them, and leave the caller's stream alone
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def kth_neighbour_radii(points: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each point to its k-th nearest other point of the same set."""
    radii = []
    for chunk in points.split(DISTANCE_CHUNK):
        distances = torch.cdist(chunk, points)
        radii.append(distances.topk(k + 1, dim=1, largest=False).values[:, k])  # column 0 is the point itself
    return torch.cat(radii)


def share_inside(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> float:
    """The share of queries that lie within the radius of at least one centre."""
    inside = [(torch.cdist(chunk, centres) <= radii[None, :]).any(dim=1) for chunk in queries.split(DISTANCE_CHUNK)]
    return torch.cat(inside).double().mean().item()


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = NEIGHBOURS) -> tuple[float, float]:
    precision = share_inside(fake, real, kth_neighbour_radii(real, k))
    recall = share_inside(real, fake, kth_neighbour_radii(fake, k))
    return precision, recall


def inception_score(probabilities: torch.Tensor) -> float:
    marginal = probabilities.mean(dim=0, keepdim=True)
    kl = (probabilities * (torch.log(probabilities + 1e-12) - torch.log(marginal + 1e-12))).sum(dim=1)
    return math.exp(kl.mean().item())


def class_coverage(probabilities: torch.Tensor) -> dict:
    counts = torch.bincount(probabilities.argmax(dim=1), minlength=probabilities.shape[1])
    shares = counts.double() / counts.sum()
    entropy = -(shares[shares > 0] * shares[shares > 0].log()).sum().item()
    return {
        "histogram": counts.tolist(),
        "entropy_bits": entropy / math.log(2),
        "classes_at_5_percent": int((shares >= CLASS_SHARE).sum()),
    }


def quality(features: torch.Tensor, probabilities: torch.Tensor, reference: torch.Tensor) -> dict:
    """All the metrics of one image set against the reference (test) features.

    The distances need more than k = 3 images on each side (the k-th neighbour, a covariance); with fewer, as
    in one class of a small image folder, they are None rather than an error or a number from noise."""
    distances = {"fid": None, "kid": None, "kid_std": None, "precision": None, "recall": None}
    if min(len(features), len(reference)) > NEIGHBOURS:
        kid, kid_std = kernel_distance(reference, features)
        precision, recall = precision_recall(reference, features)
        distances = {
            "fid": frechet_distance(reference, features),
            "kid": kid,
            "kid_std": kid_std,
            "precision": precision,
            "recall": recall,
        }
    return {
        "images": len(features),
        **distances,
        "inception_score": inception_score(probabilities),
        **class_coverage(probabilities),
    }


def sample_quality(classifier, samples: torch.Tensor, reference: torch.Tensor, held_out: torch.Tensor) -> dict:
    """The samples' metrics against `reference` real images, beside those of `held_out` real images.

    All images are (N, 1, 28, 28) or (N, 28, 28) in [0, 1]; held_out is cut to as many images as
    there are samples, since FID and KID depend on the count.
    """
    return embedded_quality(
        embed(classifier, samples), embed(classifier, reference), embed(classifier, held_out[: len(samples)])
    )


def embedded_quality(samples: tuple, reference: tuple, held_out: tuple) -> dict:
    """sample_quality from embeddings already made, each embed()'s (features, probabilities); the floor takes
    held_out's first rows, as many as there are samples."""
    (sample_features, sample_probabilities), (reference_features, _) = samples, reference
    count = len(sample_features)
    floor_features, floor_probabilities = held_out[0][:count], held_out[1][:count]
    return {
        "samples": count,
        "reference_images": len(reference_features),
        "model": quality(sample_features, sample_probabilities, reference_features),
        "real_floor": quality(floor_features, floor_probabilities, reference_features),
    }
