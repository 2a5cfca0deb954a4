"""Sample quality of any images: a model's samples during `dgm eval`, or images from anywhere (`dgm score`).

Every number lives in the feature space of a classifier trained on the data
the images imitate (feature_network.py), and comes beside the same number for
real held-out images of the same count: the floor that a perfect generator
would reach. The report names the feature network and the SHA-256 of its
weights, since numbers from different feature networks are not comparable.
"""

from pathlib import Path

import numpy as np
import torch

from dgm_cli.data import Dataset, load_dataset
from dgm_cli.device import resolve_device
from dgm_cli.errors import DgmError
from dgm_cli.feature_network import feature_network, missing_note
from dgm_cli.metrics import embed, embedded_quality
from dgm_cli.metrics import sample_quality as measure
from dgm_cli.models.base import as_uint8_images
from dgm_cli.progress import Reporter

IMAGE_SUFFIXES = (".png",)


def floor_split(split: str) -> str:
    """The held-out split whose real images give the floor: the validation split, or the test split when the
    validation split is the one measured against."""
    return "test" if split == "val" else "val"


def read_images(source) -> torch.Tensor:
    """Images as floats (N, 1, 28, 28) in [0, 1] from a tensor or NumPy array ((N, 28, 28), (N, 1, 28, 28) or
    (N, 28, 28, 1); uint8 or floats in [0, 1]), an .npz file holding one such array (or one named "images"),
    or a folder of 28x28 PNG files (read in name order, as grayscale)."""
    if isinstance(source, (str, Path)):
        source = array_from_file(Path(source))
    array = torch.as_tensor(np.asarray(source)) if not isinstance(source, torch.Tensor) else source
    if array.dim() == 4 and array.shape[-1] == 1 and array.shape[1] != 1:  # channels last
        array = array[..., 0]
    if array.dim() == 0 or len(array) == 0:
        raise DgmError("no images to score: the array is empty")
    pixels = as_uint8_images(array)  # checks the shape, the type and the range
    if array.dtype == torch.uint8:
        return pixels.float().div(255).unsqueeze(1)
    return array.detach().cpu().float().reshape(-1, 1, 28, 28)  # floats as given: no rounding to 8 bits


def array_from_file(path: Path):
    """The array an .npz file holds, or a folder of PNGs stacked."""
    if path.is_dir():
        return pngs_in(path)
    if not path.is_file():
        raise DgmError(f"{path} does not exist; pass an .npz file or a folder of PNG images")
    if path.suffix != ".npz":
        raise DgmError(f"{path} is not an .npz file; pass an .npz file or a folder of PNG images")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            names = list(arrays.files)
            name = "images" if "images" in names else names[0] if len(names) == 1 else None
            if name is None:
                raise DgmError(f"{path} holds several arrays ({', '.join(names)}) and none named 'images'")
            return arrays[name]
    except (OSError, ValueError) as error:
        raise DgmError(f"{path} is not a readable .npz file ({error})") from None


def pngs_in(folder: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DgmError(f"{folder} holds no .png files")
    images = []
    for file in files:
        try:
            with Image.open(file) as image:
                pixels = np.asarray(image.convert("L"))
        except (OSError, UnidentifiedImageError) as error:
            raise DgmError(f"{file} cannot be read as an image ({error})") from None
        if pixels.shape != (28, 28):
            raise DgmError(f"{file} is {pixels.shape[1]}x{pixels.shape[0]}; score 28x28 images (resize them first)")
        images.append(pixels)
    return np.stack(images)


def sample_quality(
    images,
    *,
    dataset: "str | Path | Dataset" = "mnist",
    classifier: Path | None = None,
    data_dir: Path | None = None,
    device: str = "auto",
    reporter: Reporter | None = None,
) -> dict:
    """FID, KID, precision/recall, Inception Score and class coverage of any images against a dataset's test
    split, beside the same metrics for as many of its real validation images (the floor).

    images: a tensor or NumPy array ((N, 28, 28), (N, 1, 28, 28) or (N, 28, 28, 1); uint8, or floats in
    [0, 1]), an .npz file, or a folder of 28x28 PNGs. dataset: "mnist", "fashion-mnist", "mnist-mini", a folder
    of images, or a Dataset. classifier: a `dgm train classifier` checkpoint trained on that data (default: the
    shipped one for MNIST and Fashion-MNIST; an image folder needs one). Returns a dict with "dataset",
    "feature_network" (its checkpoint and SHA-256) and "sample_quality" ("model" and "real_floor": fid, kid,
    kid_std, precision, recall in [0, 1], inception_score, histogram, entropy_bits, classes_at_5_percent)."""
    reporter = reporter or Reporter()
    pictures = read_images(images)
    if not isinstance(dataset, Dataset):
        name = str(dataset)
        dataset = reporter.read_data(lambda progress: load_dataset(name, data_dir, progress=progress))
    features = feature_network(dataset.describe(), resolve_device(device), classifier=classifier)
    if features is None:
        raise DgmError(missing_note(dataset.describe(), "scoring").replace(" skipped:", " needs a classifier, and"))
    reporter.note(f"scoring {len(pictures):,} images with {features.words()}")
    measured = measure(
        features.classifier,
        pictures,
        reference=dataset.test.images.float() / 255,
        held_out=dataset.split(floor_split("test")).images.float() / 255,
    )
    return {
        "dataset": dataset.name,
        "split": "test",
        "feature_network": features.describe(),
        "sample_quality": {"floor_split": floor_split("test"), **measured},
    }


def evaluate_samples(
    report,
    model,
    dataset: Dataset,
    *,
    samples: int,
    seed: int,
    raw: bool,
    temperature: float,
    classifier: Path | None,
    reporter: Reporter,
    sampler_options: dict,
) -> None:
    """dgm eval's sample-quality sections: `samples` images drawn with `seed` and measured against the evaluated
    split; a conditional model draws every class equally and is measured per class too."""
    features = feature_network(dataset.describe(), model.device, classifier=classifier)
    if features is None:
        report.sample_quality_skipped = missing_note(dataset.describe(), "sample quality")
        reporter.note(report.sample_quality_skipped, warning=True)
        return
    report.feature_network = features.describe()
    chosen, held_out = dataset.split(report.split), dataset.split(floor_split(report.split))
    sample_labels = None
    if model.classes:  # an equal number of every class, so that each class's metrics rest on as many samples
        from dgm_cli.models.conditioning import class_rows

        sample_labels = class_rows(model.classes, max(1, samples // model.classes))
        samples = len(sample_labels)
    reporter.note(f"sample quality: drawing {samples:,} images and embedding them with {features.words()}")
    drawn = draw_with_progress(
        model, samples, reporter, seed=seed, raw=raw, labels=sample_labels, temperature=temperature, **sampler_options
    )
    described = model.describe_sampler(**sampler_options)
    # Each set is embedded once: a conditional model's per-class metrics take their rows of the same features
    # (every held-out image for the class floors; the overall floor takes as many as there are samples).
    floor_images = held_out.images if model.classes else held_out.images[: len(drawn)]
    embedded = {
        "samples": embed(features.classifier, drawn),
        "reference": embed(features.classifier, chosen.images.float() / 255),
        "held_out": embed(features.classifier, floor_images.float() / 255),
    }
    report.sample_quality = {
        "floor_split": floor_split(report.split),
        "temperature": temperature,
        **({} if described is None else {"sampler": described}),
        "weights": "live" if raw or not model.keeps_average else "moving average",
        **embedded_quality(**embedded),
    }
    if model.classes:
        from dgm_cli.conditional import conditional_quality

        reporter.note(f"conditional accuracy and per-class quality: {samples // model.classes:,} samples of each class")
        report.conditional_quality = conditional_quality(
            embedded["samples"],
            sample_labels,
            reference=embedded["reference"],
            reference_labels=chosen.labels,
            held_out=embedded["held_out"],
            held_out_labels=held_out.labels,
        )


def draw_with_progress(model, n: int, reporter: Reporter, **options) -> torch.Tensor:
    """sampling.sample_images, with a bar over an iterative sampler's denoising steps."""
    from dgm_cli.sampling import sample_images

    if "iterative_sampler" not in model.capabilities:
        return sample_images(model, n, **options)
    sampler_options = {k: v for k, v in options.items() if k in model.sampler_options}
    total = model.denoising_steps(n, **sampler_options)
    with reporter.task(
        f"{model.describe_sampler(**sampler_options)['sampler']} sampler, {n:,} images", total
    ) as advance:
        return sample_images(model, n, on_step=advance, **options)
