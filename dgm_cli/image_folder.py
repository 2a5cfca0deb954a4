"""Your own images: a folder of PNG, JPEG, BMP or WebP files as a dgm dataset.

Layout, as torchvision's ImageFolder has it: root/CLASS/*.png gives labelled
images (class index = position of the folder's name in sorted order, images
found at any depth below it); images directly in root are unlabelled. Splits:
root/test/ and root/val/ when present, the training images then in root/train/
or in the rest of root; a split without a folder is drawn from the training
images with a fixed seed: a seventh of them for test, a sixth of the rest for
validation (MNIST's 60,000 / 10,000 and 50,000 / 10,000). The seed and the rule
travel in the dataset's description, so a checkpoint records its split.

Every image becomes 8-bit grayscale, 28x28:
* colour (RGB, CMYK, YCbCr, palettes) -> Pillow's ITU-R 601-2 luma; an alpha
  channel is composited over black, MNIST's background; 16-bit grayscale is
  scaled by 255/65535 (Pillow's own conversion would clip it); 1-bit -> 0/255;
* size: `crop` (the default) keeps the centred largest square, `pad` pads the
  shorter side with black to a square; then a Lanczos resize (antialiased when
  shrinking). A 28x28 grayscale file is taken as it is.

Decoding happens once per folder listing: the uint8 result is cached as
safetensors under ~/.cache/dgm/image-folders ($DGM_CACHE_DIR, else
$XDG_CACHE_HOME/dgm), keyed by every file's relative path, size and
modification time and by the fit, so a second run reads it back in about a
second and a changed folder is decoded again. Large folders are decoded by
several processes (fork), each returning its images as bytes.
"""

import hashlib
import json
import os
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from dgm_cli.errors import DgmError

if TYPE_CHECKING:  # Pillow is imported where images are decoded, so that importing dgm stays fast
    from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SPLIT_FOLDERS = ("train", "val", "test")
FITS = ("crop", "pad")
SIZE = 28
SPLIT_SEED = 0  # the seeded split's generator; recorded with the data
CACHE_FORMAT = "2"  # bump when decoding changes, so old cache entries are not read
PARALLEL_FROM = 4000  # below this many files a process pool costs more than it saves
CHUNK = 500  # files per task of a decoding process
# Bytes a decoded image costs while training: its uint8 copy and a 32-bit float copy of a prepared split.
BYTES_PER_IMAGE = SIZE * SIZE * (1 + 4)


@dataclass
class Listing:
    """What a folder holds: the image files (relative paths, sorted), their split folder and class."""

    root: Path
    files: list[str] = field(default_factory=list)
    stats: list[tuple[int, int]] = field(default_factory=list)  # (size in bytes, modification time in ns)
    splits: list[str] = field(default_factory=list)  # "train", "val", "test"
    labels: list[int] = field(default_factory=list)  # the class index, -1 for an unlabelled image
    class_names: tuple[str, ...] = ()
    ignored: int = 0  # files that are not images (by their suffix)
    split_folders: tuple[str, ...] = ()  # which of val/ and test/ the folder has

    def reordered(self, order: list[int]) -> "Listing":
        pick = lambda values: [values[i] for i in order]  # noqa: E731
        return Listing(
            self.root,
            pick(self.files),
            pick(self.stats),
            pick(self.splits),
            pick(self.labels),
            self.class_names,
            self.ignored,
            self.split_folders,
        )

    def key(self, fit: str) -> str:
        """The cache key: the listing (paths, sizes, times) and how the images are brought to 28x28."""
        digest = hashlib.sha256(f"{CACHE_FORMAT}\0{fit}\0{self.root.resolve()}\0".encode())
        for name, (size, mtime), split, label in zip(self.files, self.stats, self.splits, self.labels):
            digest.update(f"{name}\0{size}\0{mtime}\0{split}\0{label}\n".encode())
        return digest.hexdigest()[:32]


# ---------------------------------------------------------------- the listing


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _walk(folder: str) -> tuple[list[str], int]:
    """Every image below folder (sorted paths), and how many other files there are; hidden entries are skipped.
    Paths stay strings: a Path object per file costs half a kilobyte, 35 MB for 70,000 files."""
    images, others = [], 0
    for current, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            if is_image(name):
                images.append(os.path.join(current, name))
            else:
                others += 1
    return images, others


def _split_contents(folder: Path, skip: set[str]) -> tuple[list[str], dict[str, list[str]], int]:
    """One split's images: those directly in `folder` (unlabelled) and those of each class subfolder."""
    direct, classes, others = [], {}, 0
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith(".") or entry.name in skip:
            continue
        if entry.is_dir():
            images, other = _walk(entry.path)
            others += other
            if images:  # an empty subfolder is no class
                classes[entry.name] = images
        elif is_image(entry.name):
            direct.append(entry.path)
        else:
            others += 1
    if direct and classes:
        raise DgmError(
            f"{folder} holds {len(direct)} image(s) beside the class folders {', '.join(sorted(classes)[:5])}; "
            "put every image in a class folder, or use a folder without subfolders for unlabelled images"
        )
    return direct, classes, others


def scan(root: Path) -> Listing:
    """The image files of `root` with their split and class; one-line errors for what cannot be a dataset."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DgmError(
            f"{root} does not exist; pass a folder of images (or a dataset name: mnist, fashion-mnist, mnist-mini)"
        )
    if not root.is_dir():
        raise DgmError(f"{root} is a file, not a folder of images; pass the folder that holds them")
    given = tuple(name for name in ("val", "test") if (root / name).is_dir())
    train_root = root / "train" if given and (root / "train").is_dir() else root
    split_roots = {"train": train_root, **{name: root / name for name in given}}
    listing = Listing(root=root, split_folders=given)
    contents = {}
    for split, folder in split_roots.items():
        direct, classes, others = _split_contents(folder, skip=set(SPLIT_FOLDERS) if folder == root else set())
        listing.ignored += others
        contents[split] = (direct, classes)
    labelled = {split: bool(classes) for split, (direct, classes) in contents.items() if direct or classes}
    if not labelled.get("train", False) and not contents["train"][0]:
        raise DgmError(_no_images_message(train_root, listing.ignored))
    if len(set(labelled.values())) > 1:
        kinds = ", ".join(
            f"{split}/ {'in class folders' if flag else 'unlabelled'}" for split, flag in labelled.items()
        )
        raise DgmError(f"{root}: the splits disagree on labels ({kinds}); give every split class folders, or none")
    for split in given:
        if split not in labelled:
            raise DgmError(f"{root / split} holds no images; put the {split} images in it, or remove the folder")
    names = sorted(contents["train"][1])
    index = {name: number for number, name in enumerate(names)}
    for split, (direct, classes) in contents.items():
        unknown = sorted(set(classes) - set(names))
        if unknown:
            raise DgmError(
                f"{root / split} has class folder(s) {', '.join(unknown[:5])} that the training images lack; "
                "every class needs training images"
            )
        items = [(path, -1) for path in direct] + [(path, index[c]) for c in sorted(classes) for path in classes[c]]
        prefix = len(os.path.join(str(root), ""))
        for path, label in items:
            try:
                stat = os.stat(path)
                size_and_time = (stat.st_size, stat.st_mtime_ns)
            except OSError:  # a dangling link, an entry gone or unreadable: decoding reports it as a bad file
                size_and_time = (-1, -1)
            listing.files.append(path[prefix:].replace(os.sep, "/"))
            listing.stats.append(size_and_time)
            listing.splits.append(split)
            listing.labels.append(label)
    listing.class_names = tuple(names)
    return listing


def _no_images_message(folder: Path, others: int) -> str:
    if others == 0:
        return f"{folder} is empty; put PNG, JPEG, BMP or WebP images in it (in one subfolder per class for labels)"
    return (
        f"{folder} holds no images ({others} other file(s)); dgm reads {', '.join(IMAGE_SUFFIXES)}, "
        "directly in the folder or in one subfolder per class"
    )


# ---------------------------------------------------------------- decoding (runs in worker processes too)


def to_grayscale(image) -> "Image.Image":
    """8-bit grayscale: 16-bit values scaled (not clipped), alpha composited over black, colour as luma."""
    from PIL import Image

    mode = image.mode
    if mode == "L":
        return image
    if mode.startswith("I"):  # 16-bit grayscale PNGs open as I;16 or I
        values = np.asarray(image, dtype=np.float64)
        return Image.fromarray(np.clip(np.rint(values * (255 / 65535)), 0, 255).astype(np.uint8))
    if mode == "F":
        return Image.fromarray(np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8))
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("L")
    return image.convert("L")


def to_square(image, fit: str) -> "Image.Image":
    """28x28: the centred largest square (crop) or the image padded with black to a square (pad), then Lanczos."""
    from PIL import Image

    width, height = image.size
    if (width, height) == (SIZE, SIZE):
        return image
    if fit == "crop":
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    else:
        side = max(width, height)
        canvas = Image.new("L", (side, side), 0)
        canvas.paste(image, ((side - width) // 2, (side - height) // 2))
        image = canvas
    return image.resize((SIZE, SIZE), Image.Resampling.LANCZOS)


def decode_file(path: str, fit: str) -> tuple[np.ndarray, bool, bool]:
    """One file as a (28, 28) uint8 array, and whether it was converted to grayscale and whether resized."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()  # decode now, so a truncated file fails here
        gray = to_grayscale(image)
        converted = image.mode != "L"
        resized = gray.size != (SIZE, SIZE)
        square = to_square(gray, fit)
    return np.asarray(square, dtype=np.uint8).reshape(SIZE, SIZE), converted, resized


def decode_chunk(paths: list[str], fit: str) -> tuple[bytes, int, int, list[tuple[int, str]]]:
    """Several files: their pixels as bytes (a failed file's are zeros), counts converted and resized, failures."""
    out = np.zeros((len(paths), SIZE, SIZE), dtype=np.uint8)
    converted = resized = 0
    failed = []
    for index, path in enumerate(paths):
        try:
            out[index], was_converted, was_resized = decode_file(path, fit)
        except Exception as error:  # Pillow raises many types for bad files; each is "cannot be read"
            failed.append((index, " ".join(str(error).split())[:200] or type(error).__name__))
            continue
        converted += was_converted
        resized += was_resized
    return out.tobytes(), converted, resized, failed


@dataclass
class Decoded:
    images: torch.Tensor  # uint8 (N, 28, 28), the readable files only
    keep: torch.Tensor  # bool (files,): which files were readable
    converted: int
    resized: int
    failed: list[tuple[str, str]]  # (relative path, why)


def decode_all(
    listing: Listing, fit: str, *, workers: int | None = None, on_progress: Callable[[int], None] | None = None
) -> Decoded:
    """Every file of the listing, in order: in one process for small folders, else in a pool of forked ones."""
    paths = [str(listing.root / name) for name in listing.files]
    chunks = [paths[start : start + CHUNK] for start in range(0, len(paths), CHUNK)]
    images = np.empty((len(paths), SIZE, SIZE), dtype=np.uint8)
    keep = np.ones(len(paths), dtype=bool)
    converted = resized = 0
    failed = []
    if workers is None:
        workers = min(os.cpu_count() or 1, 8) if len(paths) >= PARALLEL_FROM and _can_fork() else 1
    if workers > 1:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork"))
        results = pool.map(decode_chunk, chunks, [fit] * len(chunks))
    else:
        pool, results = None, (decode_chunk(chunk, fit) for chunk in chunks)
    try:
        for number, (pixels, chunk_converted, chunk_resized, chunk_failed) in enumerate(results):
            start = number * CHUNK
            images[start : start + len(chunks[number])] = np.frombuffer(pixels, np.uint8).reshape(-1, SIZE, SIZE)
            converted += chunk_converted
            resized += chunk_resized
            for index, why in chunk_failed:
                keep[start + index] = False
                failed.append((listing.files[start + index], why))
            if on_progress is not None:
                on_progress(len(chunks[number]))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    kept, decoded = torch.from_numpy(keep), torch.from_numpy(images)
    # Only a folder with unreadable files pays for a second copy: memory during decoding stays one tensor.
    return Decoded(decoded if keep.all() else decoded[kept], kept, converted, resized, failed)


def _can_fork() -> bool:
    return sys.platform.startswith("linux")


# ---------------------------------------------------------------- memory and cache


def available_memory() -> int | None:
    """Bytes the system can give without swapping (MemAvailable), or None where that is not known."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(root: Path, count: int, available: int | None) -> None:
    """Refuse, before decoding, a folder whose images would not fit in memory as training holds them."""
    need = count * BYTES_PER_IMAGE
    if available is not None and need > available:
        raise DgmError(
            f"{root} holds {count:,} images, which need about {need / 2**30:.1f} GiB in memory to train on "
            f"(uint8 and float copies); only {available / 2**30:.1f} GiB are available; "
            "use a folder with fewer images"
        )


def cache_dir() -> Path:
    if os.environ.get("DGM_CACHE_DIR"):
        return Path(os.environ["DGM_CACHE_DIR"]).expanduser() / "image-folders"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dgm" / "image-folders"


def read_cache(path: Path, files: int) -> Decoded | None:
    """A cached decode, or None when there is none or it cannot be read (a damaged entry is decoded again)."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            facts = json.loads(handle.metadata()["dgm.facts"])
            decoded = Decoded(
                handle.get_tensor("images"),
                handle.get_tensor("keep"),
                facts["converted"],
                facts["resized"],
                [tuple(item) for item in facts["failed"]],
            )
    except Exception:  # a damaged or foreign entry (safetensors raises its own error types): decode again
        return None
    if len(decoded.keep) != files or int(decoded.keep.sum()) != len(decoded.images):
        return None
    return decoded


def write_cache(path: Path, decoded: Decoded) -> bool:
    """Keep a decode for the next run; a cache that cannot be written only costs the next run its time.

    The safetensors file is written by hand (an 8-byte header length, the JSON header, the raw bytes) straight
    from the tensors' memory: safetensors' own save_file first copies every tensor into a bytes object, which
    would double the memory a large folder needs."""
    from dgm_cli.atomic import atomic_path

    images, keep = decoded.images.contiguous(), decoded.keep.contiguous()
    facts = {"converted": decoded.converted, "resized": decoded.resized, "failed": decoded.failed}
    sizes = [images.numel(), keep.numel()]
    header = {
        "__metadata__": {"dgm.facts": json.dumps(facts)},
        "images": {"dtype": "U8", "shape": list(images.shape), "data_offsets": [0, sizes[0]]},
        "keep": {"dtype": "BOOL", "shape": list(keep.shape), "data_offsets": [sizes[0], sizes[0] + sizes[1]]},
    }
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)  # the format aligns the data to 8 bytes
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as temporary, open(temporary, "wb") as handle:
            handle.write(len(encoded).to_bytes(8, "little"))
            handle.write(encoded)
            handle.write(memoryview(images.numpy()).cast("B"))
            handle.write(memoryview(keep.numpy()).cast("B"))
    except (OSError, DgmError):
        return False
    return True


# ---------------------------------------------------------------- the folder as splits


@dataclass
class FolderImages:
    """A folder's readable images with their labels, split into train / val / test (index tensors)."""

    root: Path
    images: torch.Tensor  # uint8 (N, 28, 28)
    labels: torch.Tensor  # int64 (N,), -1 where unlabelled
    splits: dict[str, slice]  # each split's rows of images and labels
    class_names: tuple[str, ...]
    preparation: dict  # how the files became these images and splits: recorded with the data
    notes: list[str]  # one line each: what was converted, resized, ignored, skipped, read from the cache


def seeded_splits(assigned: list[str], given: tuple[str, ...]) -> list[str]:
    """Each file's split: its folder's, and for a split without a folder a seeded draw from the training
    files (a seventh for test, then a sixth of the rest for validation). Drawn from the listing, before
    decoding, so the images can be decoded in split order and each split is a slice of one tensor."""
    codes = list(assigned)
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    for split, share in (("test", 7), ("val", 6)):
        if split in given:
            continue
        pool = torch.tensor([i for i, code in enumerate(codes) if code == "train"], dtype=torch.long)
        if len(pool) < 3:
            raise DgmError(
                f"too few training images ({len(pool)}) to hold some out for the {split} split; "
                "add images, or give a test/ and a val/ folder"
            )
        for index in pool[torch.randperm(len(pool), generator=generator)][: max(1, len(pool) // share)].tolist():
            codes[index] = split
    return codes


def split_slices(root: Path, codes: list[str], kept: list[bool]) -> dict[str, slice]:
    """Each split's rows among the kept images, which come in split order (train, val, test)."""
    sizes = [sum(1 for code, keep in zip(codes, kept) if keep and code == split) for split in SPLIT_FOLDERS]
    if min(sizes) == 0:
        empty = SPLIT_FOLDERS[sizes.index(0)]
        raise DgmError(f"no readable image is left for the {empty} split of {root}; add images")
    bounds = torch.tensor([0, *sizes]).cumsum(0).tolist()
    return {split: slice(bounds[i], bounds[i + 1]) for i, split in enumerate(SPLIT_FOLDERS)}


def read_folder(
    root: Path,
    *,
    fit: str = "crop",
    skip_bad: bool = False,
    progress: Callable[[int], Callable[[int], None]] | None = None,
) -> FolderImages:
    """The images of `root`, decoded (or read from the cache) and split. `progress(total)` returns the
    callback that decoding advances by each chunk's file count; it is called only when decoding is needed.

    The files are decoded in split order (train, val, test; each in listing order), so the three splits are
    slices of one uint8 tensor: memory holds the images once, and once more only while the cache is written."""
    if fit not in FITS:
        raise DgmError(f"unknown fit {fit!r}; choose one of {', '.join(FITS)}")
    listing = scan(Path(root))
    codes = seeded_splits(listing.splits, listing.split_folders)
    order = sorted(range(len(codes)), key=lambda i: (SPLIT_FOLDERS.index(codes[i]), i))
    listing = listing.reordered(order)
    codes = [codes[i] for i in order]
    cache = cache_dir() / f"{listing.key(fit)}.safetensors"
    decoded = read_cache(cache, len(listing.files))
    from_cache = decoded is not None
    if decoded is None:
        check_memory(listing.root, len(listing.files), available_memory())
        decoded = decode_all(listing, fit, on_progress=progress(len(listing.files)) if progress else None)
    if decoded.failed and not skip_bad:
        path, why = decoded.failed[0]
        more = f" ({len(decoded.failed)} files cannot be read)" if len(decoded.failed) > 1 else ""
        raise DgmError(
            f"{listing.root / path} cannot be read as an image: {why}{more}; fix or delete it, or pass "
            "--skip-bad-images to leave such files out"
        )
    if not from_cache:
        write_cache(cache, decoded)
    kept = decoded.keep.tolist()
    if not any(kept):
        raise DgmError(f"none of the {len(listing.files)} images of {listing.root} can be read")
    labels = torch.tensor([label for label, keep in zip(listing.labels, kept) if keep], dtype=torch.long)
    splits = split_slices(listing.root, codes, kept)
    notes = [_decode_note(listing, decoded, fit, cache if from_cache else None)]
    if listing.ignored:
        notes.append(f"ignored {listing.ignored:,} file(s) that are not images ({', '.join(IMAGE_SUFFIXES)})")
    if decoded.failed:
        notes.append(
            f"skipped {len(decoded.failed):,} file(s) that cannot be read as images "
            f"(first: {decoded.failed[0][0]}: {decoded.failed[0][1]})"
        )
    preparation = describe_preparation(listing, cache, fit=fit, skip_bad=skip_bad, skipped=len(decoded.failed))
    return FolderImages(listing.root, decoded.images, labels, splits, listing.class_names, preparation, notes)


def describe_preparation(listing, cache: Path, *, fit: str, skip_bad: bool, skipped: int) -> dict:
    """How the folder became a dataset, as the run records it (and an evaluation reads it again)."""
    drawn = [split for split in ("test", "val") if split not in listing.split_folders]
    return {
        "listing": cache.stem,  # the hash of paths, sizes and times that names the cache entry (not compared)
        "fit": fit,
        "resize": "lanczos",
        "skip_bad_images": skip_bad,
        "skipped": skipped,
        "split_folders": list(listing.split_folders),
        "seeded_splits": drawn,
        "split_seed": SPLIT_SEED if drawn else None,
    }


def _decode_note(listing: Listing, decoded: Decoded, fit: str, cache: Path | None) -> str:
    what = "unlabelled" if not listing.class_names else f"in {len(listing.class_names)} classes"
    count = f"{len(decoded.images):,} images {what} from {listing.root}"
    if cache is not None:
        return f"read {count} from the cache ({cache})"
    how = "centre crop" if fit == "crop" else "padding with black"
    return (
        f"decoded {count}: {decoded.converted:,} converted to 8-bit grayscale, {decoded.resized:,} resized to "
        f"28x28 ({how} to a square, then Lanczos)"
    )
