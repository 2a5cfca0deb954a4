"""MNIST-style data: IDX files, checksums, where the files are looked for, and the splits.

The four gzip IDX files are read directly (no torchvision dataset object, no
DataLoader): each split becomes one uint8 tensor that the trainer moves to the
training device whole.

Checksums are MD5s of the *unpacked* bytes rather than of the .gz files, so a
re-compressed copy of the same data (Debian ships Fashion-MNIST that way) still
verifies, while a truncated or altered file does not.
"""

import gzip
import hashlib
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dgm_cli.errors import DgmError

IMAGE_SHAPE = (1, 28, 28)
PIXELS = 28 * 28

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

ASSETS = Path(__file__).parent / "assets"


@dataclass(frozen=True)
class Source:
    """Where one dataset's four files can be found and what their contents must hash to."""

    name: str
    content_md5: dict[str, str]
    folder: str | None = None  # torchvision's folder under a data root: <root>/<folder>/raw
    system_dirs: tuple[Path, ...] = ()  # read-only places a package manager installs to
    torchvision_class: str | None = None  # used to download the files when they are missing


SOURCES = {
    "mnist": Source(
        name="mnist",
        folder="MNIST",
        torchvision_class="MNIST",
        content_md5={
            "train_images": "6bbc9ace898e44ae57da46a324031adb",
            "train_labels": "a25bea736e30d166cdddb491f175f624",
            "test_images": "2646ac647ad5339dbf082846283269ea",
            "test_labels": "27ae3e4e09519cfbb04c329615203637",
        },
    ),
    "fashion-mnist": Source(
        name="fashion-mnist",
        folder="FashionMNIST",
        torchvision_class="FashionMNIST",
        system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
        # From Debian's dataset-fashion-mnist (0.0~git20200523.55506a9-1), whose labels hold
        # exactly 6,000 / 1,000 of each class, as the official release does.
        content_md5={
            "train_images": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "train_labels": "9018921c3c673c538a1fc5bad174d6f9",
            "test_images": "8181f5470baa50b63fa0f6fddb340f0a",
            "test_labels": "15d484375f8d13e6eb1aabb0c3f46965",
        },
    ),
    "mnist-mini": Source(
        name="mnist-mini",
        system_dirs=(ASSETS / "mnist-mini",),
        # Written by scripts/make_mnist_mini.py from the official files.
        content_md5={
            "train_images": "e5745bbfadcc33b878fede0ec121d742",
            "train_labels": "13b93db4247929e07df96478a06f95de",
            "test_images": "bac4371a484d0b5651e81d99305acb5a",
            "test_labels": "556860b2f10365a8f7444c1e79c7e9af",
        },
    ),
}

DATASETS = tuple(SOURCES)


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8, (N, 28, 28)
    labels: torch.Tensor  # int64, (N,)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split
    location: str
    fallback_reason: str | None = None  # why a bundled subset replaced the dataset asked for
    content_md5: dict[str, str] = field(default_factory=dict)  # MD5 of each file's unpacked contents
    classes: int = 10  # how many classes the labels index; 0 for unlabelled images
    class_names: tuple[str, ...] = ()  # an image folder's class folders, in label order
    kind: str = "named"  # "named" (the IDX datasets) or "image-folder" (image_folder.py)
    preparation: dict = field(default_factory=dict)  # an image folder's: fit, skipped files, how it was split
    notes: tuple[str, ...] = ()  # what loading did, one line each, for the user (decoded, cached, ignored)
    splits: dict = field(init=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "splits", {"train": self.train, "val": self.val, "test": self.test})

    def split(self, name: str) -> Split:
        return self.splits[name]

    def identity(self) -> dict:
        """What makes two loads the same data: their contents and splits, never the folder they were read from."""
        identity = {
            "name": self.name,
            "train": len(self.train),
            "val": len(self.val),
            "test": len(self.test),
            "content_md5": dict(self.content_md5),
        }
        if self.kind == "image-folder":  # its contents are the decoded images and labels; the names say what a label is
            identity.update(kind=self.kind, classes=self.classes, class_names=list(self.class_names))
        return identity

    def describe(self) -> dict:
        """The facts a checkpoint and a run record about their data: the identity, any fallback, where they were read."""
        return {
            **self.identity(),
            "fallback": self.fallback_reason is not None,
            "fallback_reason": self.fallback_reason,
            "location": self.location,
            **({"preparation": dict(self.preparation)} if self.preparation else {}),
        }

    def differences(self, recorded: dict) -> list[str]:
        """How these data differ from a recorded identity (a describe() of an earlier load); empty when the same.

        Records written before checksums were kept have no content_md5: their name and split sizes are compared,
        which for the named datasets is still the contents, since every load checks each file against its MD5.
        """
        mine = self.identity()
        keys = ["name", "train", "val", "test"] + (["content_md5"] if recorded.get("content_md5") else [])
        keys += [key for key in ("kind", "classes", "class_names") if key in recorded or key in mine]
        if recorded.get("kind") == "image-folder" and mine.get("kind") == "image-folder":
            keys.remove("name")  # a folder's name is where it is, not what it holds: a moved folder is the same data
        return [key for key in keys if recorded.get(key) != mine[key]]


# ---------------------------------------------------------------- IDX format


def parse_idx(data: bytes, *, what: str) -> torch.Tensor:
    """IDX: a big-endian int32 magic and counts, then row-major uint8 values."""
    if len(data) < 8:
        raise DgmError(f"{what} is too short to be an IDX file ({len(data)} bytes)")
    magic, count = struct.unpack(">ii", data[:8])
    if magic == IMAGES_MAGIC:
        if len(data) < 16:
            raise DgmError(f"{what} is too short to be an IDX image file ({len(data)} bytes)")
        rows, cols = struct.unpack(">ii", data[8:16])
        shape, offset = (count, rows, cols), 16
    elif magic == LABELS_MAGIC:
        shape, offset = (count,), 8
    else:
        raise DgmError(f"{what} is not an IDX file of images or labels (magic number {magic})")
    expected = offset + int(torch.Size(shape).numel())
    if min(shape) < 0 or len(data) != expected:
        raise DgmError(f"{what} has {len(data)} bytes but its header {shape} needs {expected}")
    return torch.frombuffer(bytearray(data[offset:]), dtype=torch.uint8).reshape(shape)


def encode_idx(values: torch.Tensor) -> bytes:
    """The inverse of parse_idx, for uint8 images (N, H, W) or labels (N,)."""
    values = values.to(torch.uint8).contiguous()
    if values.dim() == 3:
        header = struct.pack(">iiii", IMAGES_MAGIC, *values.shape)
    elif values.dim() == 1:
        header = struct.pack(">ii", LABELS_MAGIC, values.shape[0])
    else:
        raise ValueError("IDX encoding takes (N, H, W) images or (N,) labels")
    return header + values.numpy().tobytes()


def write_idx_gz(path: Path, values: torch.Tensor) -> None:
    """Write gzip'd IDX without a timestamp or file name in the header, so rebuilds are byte-stable."""
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(encode_idx(values))


def read_idx_gz(path: Path, *, content_md5: str | None) -> torch.Tensor:
    try:
        with gzip.open(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError, zlib.error) as error:
        raise DgmError(f"{path} cannot be unpacked ({error}); delete it and provide the official file") from None
    if content_md5 is not None:
        digest = hashlib.md5(data).hexdigest()
        if digest != content_md5:
            raise DgmError(
                f"{path} does not hold the expected data (MD5 of its contents {digest}, expected {content_md5}); "
                "delete it and provide the official file"
            )
    return parse_idx(data, what=str(path))


# ---------------------------------------------------------------- locations


def default_data_root() -> Path:
    """$DGM_DATA_DIR, else the per-user cache folder."""
    if os.environ.get("DGM_DATA_DIR"):
        return Path(os.environ["DGM_DATA_DIR"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "dgm" / "data"


def candidate_dirs(source: Source, root: Path) -> list[Path]:
    """torchvision's layout (<root>/MNIST/raw) first, then the files directly in the named folder."""
    dirs = [root / source.folder / "raw", root] if source.folder else []
    return dirs + list(source.system_dirs)


def find_files(source: Source, root: Path) -> Path | None:
    for folder in candidate_dirs(source, root):
        if all((folder / name).is_file() for name in FILES.values()):
            return folder
    return None


def download(source: Source, root: Path) -> str | None:
    """Fetch the files through torchvision into <root>/<folder>/raw; returns why it failed, or None."""
    if os.environ.get("DGM_OFFLINE"):
        return "downloads are switched off by DGM_OFFLINE"
    from dgm_cli.compatibility import require_torchvision

    require_torchvision()  # a broken install is its own error, not a failed download
    try:
        import torchvision.datasets

        dataset_class = getattr(torchvision.datasets, source.torchvision_class)
        root.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            dataset_class(str(root), train=train, download=True)
    except Exception as error:  # offline, unwritable root, a mirror's error page: all mean "no files"
        return " ".join(str(error).split())[:300] or type(error).__name__
    return None


def missing_files_message(source: Source, root: Path, reason: str | None) -> str:
    places = ", ".join(str(d) for d in candidate_dirs(source, root))
    files = ", ".join(FILES.values())
    text = f"{source.name} was not found; looked in {places} for the four files {files}."
    if reason:
        text += f" Download failed: {reason}."
    hint = f"<root>/{source.folder}/raw/" if source.folder else "<root>/"
    return text + f" Put them in {hint} and pass --data-dir <root> (or set DGM_DATA_DIR)"


# ---------------------------------------------------------------- loading


def read_source(source: Source, folder: Path) -> dict[str, torch.Tensor]:
    return {key: read_idx_gz(folder / name, content_md5=source.content_md5.get(key)) for key, name in FILES.items()}


def default_val_size(training_file_images: int) -> int:
    """dgm's validation split of a named dataset: the last sixth of its training file (MNIST: 10,000 of 60,000)."""
    return training_file_images // 6


def make_splits(
    name: str,
    arrays: dict[str, torch.Tensor],
    location: str,
    fallback_reason: str | None,
    content_md5: dict[str, str],
    val_size: int | None = None,
) -> Dataset:
    """Validation is the last `val_size` images of the official training file, by default its last sixth:
    50,000 / 10,000 for MNIST. Published protocols differ (the IWAE paper trained on 59,600 and held out 400),
    so the size is the user's; the split is recorded with every run and checkpoint and found again from it."""
    images, labels = arrays["train_images"], arrays["train_labels"]
    if len(images) != len(labels) or len(arrays["test_images"]) != len(arrays["test_labels"]):
        raise DgmError(f"{location}: image and label files disagree on the number of items")
    if tuple(images.shape[1:]) != IMAGE_SHAPE[1:] or tuple(arrays["test_images"].shape[1:]) != IMAGE_SHAPE[1:]:
        raise DgmError(f"{location}: images must be 28x28, found {tuple(images.shape[1:])}")
    n_val = default_val_size(len(images)) if val_size is None else val_size
    if not 1 <= n_val < len(images):
        raise DgmError(
            f"--val-size {n_val} does not fit {name}'s training file of {len(images):,} images; "
            f"give 1 to {len(images) - 1:,} (default {default_val_size(len(images)):,})"
        )
    n_train = len(images) - n_val
    return Dataset(
        name=name,
        train=Split(images[:n_train], labels[:n_train].long()),
        val=Split(images[n_train:], labels[n_train:].long()),
        test=Split(arrays["test_images"], arrays["test_labels"].long()),
        location=location,
        fallback_reason=fallback_reason,
        content_md5=content_md5,
    )


def load_dataset(
    name: str | None,
    data_dir: Path | None = None,
    *,
    fit: str = "crop",
    skip_bad: bool = False,
    progress=None,
    val_size: int | None = None,
) -> Dataset:
    """Load `name` ("mnist", "fashion-mnist", "mnist-mini"), a folder of images (any `name` that is not a
    dataset's), or MNIST falling back to the bundled mnist-mini when `name` is None.

    Returns a Dataset whose train, val and test Splits hold images (uint8 tensors (N, 28, 28), 0..255) and
    labels (int64 (N,)); MNIST's validation split is the last 10,000 of its 60,000 training images unless
    val_size says otherwise. data_dir: the folder holding MNIST/raw/*.gz (default $DGM_DATA_DIR, else
    ~/.cache/dgm/data). fit, skip_bad and progress are for a folder (image_folder.read_folder).

    A dataset the user named explicitly never falls back: training on 5,000
    digits when 50,000 were asked for would make every number misleading.
    """
    requested = name or "mnist"
    if requested not in SOURCES:
        if val_size is not None:
            raise DgmError(
                "--val-size is for the named datasets; an image folder's validation images are its val/ folder, "
                "or a sixth of its training images when it has none"
            )
        return load_image_folder(Path(requested), fit=fit, skip_bad=skip_bad, progress=progress)
    source = SOURCES[requested]
    root = Path(data_dir).expanduser() if data_dir else default_data_root()
    if root.exists() and not root.is_dir():
        named_by = "--data-dir" if data_dir else "DGM_DATA_DIR" if os.environ.get("DGM_DATA_DIR") else "the data cache"
        raise DgmError(
            f"{named_by} names {root}, which is a file; name the folder that holds MNIST/raw (or the four .gz files)"
        )
    folder = find_files(source, root)
    reason = None
    if folder is None and source.torchvision_class:
        reason = download(source, root)
        folder = find_files(source, root)
    if folder is None:
        message = missing_files_message(source, root, reason)
        if name is not None:
            raise DgmError(message)
        return load_bundled(fallback_reason=message, val_size=val_size)
    return make_splits(
        requested, read_source(source, folder), str(folder.resolve()), None, source.content_md5, val_size
    )


def load_image_folder(root: Path, *, fit: str = "crop", skip_bad: bool = False, progress=None) -> Dataset:
    """A folder of the user's images as a dataset, identified by the MD5s of its decoded splits."""
    from dgm_cli.image_folder import read_folder

    folder = read_folder(root, fit=fit, skip_bad=skip_bad, progress=progress)
    # Each split is a slice, a view of the folder's one tensor: the images are held once.
    splits = {name: Split(folder.images[rows], folder.labels[rows]) for name, rows in folder.splits.items()}
    content_md5 = {}
    for name, split in splits.items():  # hashed in place: a bytes copy would double the memory for a moment
        content_md5[f"{name}_images"] = hashlib.md5(split.images.numpy()).hexdigest()
        content_md5[f"{name}_labels"] = hashlib.md5(split.labels.numpy()).hexdigest()
    resolved = folder.root.resolve()
    return Dataset(
        name=resolved.name or str(resolved),
        **splits,
        location=str(resolved),
        content_md5=content_md5,
        classes=len(folder.class_names),
        class_names=folder.class_names,
        kind="image-folder",
        preparation=folder.preparation,
        notes=tuple(folder.notes),
    )


def load_bundled(fallback_reason: str | None = None, val_size: int | None = None) -> Dataset:
    """The mnist-mini subset inside the package, wherever the package is installed now."""
    mini = SOURCES["mnist-mini"]
    arrays = read_source(mini, mini.system_dirs[0])
    return make_splits("mnist-mini", arrays, "bundled", fallback_reason, mini.content_md5, val_size)


def recorded_root(recorded: dict, data_dir: Path | None) -> Path | None:
    """Where to read a named dataset a run or checkpoint recorded: `data_dir` when given, else the folder the
    files were read from when they are still there, else None (the default places)."""
    location, source = recorded.get("location"), SOURCES.get(recorded.get("name"))
    if data_dir is None and source and location and location != "bundled" and find_files(source, Path(location)):
        return Path(location)
    return data_dir


def reload_dataset(recorded: dict, data_dir: Path | None, *, run: str) -> Dataset:
    """The data a run was trained on, found again for --resume; `recorded` is the run's describe() of them.

    Looked for in `data_dir` when given, else where the run found them, else in the default places; a run
    that fell back to the bundled subset finds it in the package as installed now. Whatever folder they
    come from, they must be the same data (Dataset.differences); a run's fallback stays recorded as such.
    """
    name = recorded.get("name")
    if recorded.get("kind") == "image-folder":
        dataset = reload_image_folder(recorded, data_dir, run=run)
    elif name not in SOURCES:
        raise DgmError(f"{run} was trained on an unknown dataset {name!r}; this dgm knows {', '.join(DATASETS)}")
    elif name == "mnist-mini":
        dataset = load_bundled(
            recorded.get("fallback_reason") if recorded.get("fallback") else None, recorded.get("val")
        )
    else:
        location = recorded.get("location")
        try:
            dataset = load_dataset(name, recorded_root(recorded, data_dir), val_size=recorded.get("val"))
        except DgmError as error:  # gone, or damaged: the loader's message says where it looked and what it needs
            raise DgmError(f"cannot resume {run}, whose {name} data were read from {location}: {error}") from None
    refuse_changed(dataset, recorded, run)
    return dataset


def refuse_changed(dataset: Dataset, recorded: dict, what: str) -> None:
    changed = dataset.differences(recorded)
    if changed:
        raise DgmError(
            f"the {dataset.name} data in {dataset.location} are not the data {what} was trained on (they differ in "
            f"{', '.join(changed)}); pass --data-dir with the folder that holds the original files"
        )


def trained_dataset(recorded: dict, data_dir: Path | None, *, what: str, progress=None) -> Dataset:
    """The data a checkpoint was trained on (its recorded describe()), for sample, interpolate and eval: a named
    dataset by its name (never replaced by a fallback) and split as it was (its recorded validation size); an
    image folder found again and checked by content."""
    if recorded.get("kind") == "image-folder":
        dataset = reload_image_folder(recorded, data_dir, run=what, progress=progress)
        refuse_changed(dataset, recorded, what)
        return dataset
    return load_dataset(recorded.get("name", "mnist"), recorded_root(recorded, data_dir), val_size=recorded.get("val"))


def reload_image_folder(recorded: dict, data_dir: Path | None, *, run: str, progress=None) -> Dataset:
    """An image folder a run or checkpoint recorded: in `data_dir` when given (the folder moved), else where it
    was; prepared as it was then (fit, skipped files)."""
    folder = Path(data_dir) if data_dir is not None else Path(recorded.get("location") or "")
    preparation = recorded.get("preparation") or {}
    try:
        return load_image_folder(
            folder,
            fit=preparation.get("fit", "crop"),
            skip_bad=bool(preparation.get("skip_bad_images", False)),
            progress=progress,
        )
    except DgmError as error:
        raise DgmError(
            f"cannot find the images of {run} (the folder {recorded.get('location')}): {error}; "
            "pass --data-dir with the folder's new place"
        ) from None
