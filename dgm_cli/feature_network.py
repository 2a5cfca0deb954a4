"""Which classifier's feature space measures a model's samples: one trained on the same data.

FID, KID, precision/recall, the Inception Score, class coverage and conditional
accuracy all read images through a classifier; a digit classifier looking at
pictures of clothes gives numbers, but not the numbers they claim to be. So a
classifier is used only where it fits the data being evaluated:

* the shipped MNIST classifier for mnist and mnist-mini (the bundled subset
  holds MNIST's own digits), the shipped Fashion-MNIST classifier for
  fashion-mnist;
* for an image folder none is shipped: `dgm train classifier --dataset FOLDER`
  trains one, and `dgm eval MODEL --classifier CKPT` uses it. It fits when it
  was trained on the same images (the same decoded contents and class names,
  wherever the folder is now).

A classifier given with --classifier that does not fit is refused; where none
fits, the caller skips the metrics with `missing_note`.
"""

from dataclasses import dataclass
from pathlib import Path

from dgm_cli.data import ASSETS
from dgm_cli.errors import DgmError

SHIPPED = {
    "mnist": ASSETS / "classifier" / "classifier.safetensors",
    "fashion-mnist": ASSETS / "classifier" / "fashion-mnist.safetensors",
}
# The named datasets whose images come from the same distribution share a feature space.
DOMAINS = {"mnist": "mnist", "mnist-mini": "mnist", "fashion-mnist": "fashion-mnist"}
FOLDER_IDENTITY = ("train", "val", "test", "content_md5", "classes", "class_names")  # not the folder's name or place


def domain(facts: dict) -> str | None:
    """A named dataset's domain (mnist-mini is mnist), None for an image folder or an unknown name."""
    return None if facts.get("kind") == "image-folder" else DOMAINS.get(facts.get("name"))


def fits(classifier_data: dict, data: dict) -> bool:
    """Whether a classifier trained on `classifier_data` (a checkpoint's data facts) fits the data `data`."""
    if data.get("kind") == "image-folder" or classifier_data.get("kind") == "image-folder":
        return all(classifier_data.get(key) == data.get(key) for key in FOLDER_IDENTITY)
    return domain(data) is not None and domain(classifier_data) == domain(data)


@dataclass
class FeatureNetwork:
    classifier: object  # a loaded Classifier
    path: Path
    data: dict  # the data it was trained on, as its checkpoint records them
    test_accuracy: float | None

    @property
    def classes(self) -> int:
        return self.classifier.head.out_features

    def describe(self) -> dict:
        """What the eval report records about the feature space its numbers live in."""
        from dgm_cli.checkpoint import file_sha256

        return {
            "checkpoint": str(self.path),
            "sha256": file_sha256(self.path),
            "data": self.data.get("name"),
            "data_location": self.data.get("location"),
            "classes": self.classes,
            "test_accuracy": self.test_accuracy,
        }

    def words(self) -> str:
        accuracy = "" if self.test_accuracy is None else f", {self.test_accuracy:.2%} test accuracy"
        return f"the {self.data.get('name')} classifier {self.path}{accuracy}"


def load_feature_network(path: Path, device) -> FeatureNetwork:
    from dgm_cli.checkpoint import load_checkpoint

    if not Path(path).is_file():
        raise DgmError(
            f"the classifier {path} does not exist; train one with `dgm train classifier` or pass a checkpoint"
        )
    classifier, info = load_checkpoint(path, expected_model="classifier", device=device)
    accuracy = (info.train.get("metrics") or {}).get("test_accuracy")
    return FeatureNetwork(classifier, Path(path), info.data, accuracy)


def feature_network(data: dict, device, *, classifier: Path | None = None) -> FeatureNetwork | None:
    """The classifier to measure images of `data` (a describe() of the data) with: the one given, which must
    fit, else the shipped one of the data's domain, else None."""
    if classifier is not None:
        network = load_feature_network(classifier, device)
        if not fits(network.data, data):
            raise DgmError(
                f"the classifier {classifier} was trained on {describe_data(network.data)}, not on "
                f"{describe_data(data)}, so its features do not measure these images; pass one trained "
                f"on them ({train_hint(data)})"
            )
        return network
    shipped = SHIPPED.get(domain(data))
    if shipped is None:
        return None
    if not shipped.is_file():
        raise DgmError(f"the shipped classifier {shipped} is missing; reinstall dgm")
    return load_feature_network(shipped, device)


def describe_data(facts: dict) -> str:
    if facts.get("kind") == "image-folder":
        return f"the image folder {facts.get('location')}"
    return str(facts.get("name"))


def train_hint(data: dict) -> str:
    where = data.get("location") if data.get("kind") == "image-folder" else data.get("name")
    return f"dgm train classifier --dataset {where}, then --classifier RUN/best.safetensors"


def missing_note(data: dict, what: str) -> str:
    """The one line said instead of numbers from a feature space that does not fit."""
    return (
        f"{what} skipped: no classifier fits {describe_data(data)} (its features would measure other images); "
        f"train one with `{train_hint(data)}`"
    )
