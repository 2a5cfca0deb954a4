"""Checkpoints: safetensors weights plus string metadata that is enough to rebuild the model.

safetensors holds only tensors and a JSON header, so opening a downloaded
checkpoint can never run code (unlike pickle). The metadata schema:

    dgm.format   "1"
    dgm.version  the dgm version that wrote it
    dgm.model    the registry name
    dgm.config   the model config as JSON
    dgm.data     dataset facts as JSON (name, split sizes, fallback)
    dgm.train    training facts as JSON (epoch, step, seed, device, torch, metrics)
    dgm.contents "inference" when the file holds only what sampling and evaluation read (absent: everything)
    dgm.sha256   the SHA-256 of the tensors (names, dtypes, shapes and bytes, in name order): checked on every
                 load, so a file whose bytes changed is refused instead of sampling NaN (files written
                 before it existed load with a note that they cannot be verified)

An inference-only file (model.save(path, inference_only=True), what the model
zoo ships) leaves out the tensors only training reads: the live weights beside
their moving average, a GAN's discriminator. Loading it starts the live weights
at the average, so every command that samples or evaluates works unchanged;
the live weights' own samples (--raw) and anything that needs a discriminator
are refused.

Loading reads the header first and checks everything it can (format, model,
config limits, tensor names and shapes against a model built on the "meta"
device, which allocates nothing) before a single weight is read.
"""

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from dgm_cli import __version__
from dgm_cli import config as config_tools
from dgm_cli.atomic import atomic_path
from dgm_cli.errors import DgmError
from dgm_cli.registry import get_spec, list_models

FORMAT = "1"
INFERENCE = "inference"  # dgm.contents of a file without the tensors only training reads
WRAPPER_PREFIXES = ("_orig_mod.", "module.")  # torch.compile and DistributedDataParallel


def default_checkpoint(model_name: str, folder: Path = Path("checkpoints")) -> Path:
    return Path(folder) / f"{model_name}.safetensors"


def clean_key(key: str) -> str:
    for prefix in WRAPPER_PREFIXES:
        key = key.replace(prefix, "")
    return key


def save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    *,
    model_name: str,
    config,
    data: dict,
    train: dict,
    inference_only: bool = False,
) -> None:
    tensors = {clean_key(k): v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if inference_only:
        left_out = model.training_only_tensors()
        tensors = {name: tensor for name, tensor in tensors.items() if name not in left_out}
    metadata = {
        "dgm.format": FORMAT,
        "dgm.version": __version__,
        "dgm.model": model_name,
        "dgm.config": config_tools.to_json(config),
        "dgm.data": json.dumps(data, sort_keys=True),
        "dgm.train": json.dumps(train, sort_keys=True),
        **({"dgm.contents": INFERENCE} if inference_only else {}),
        "dgm.sha256": tensors_sha256(tensors),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    model_name: str
    config: object
    data: dict
    train: dict
    version: str
    shapes: dict[str, tuple[int, ...]]
    inference_only: bool = False
    sha256: str | None = None  # of the tensors, as written; None in files from before dgm recorded it

    def as_dict(self) -> dict:
        return {
            "path": str(self.path),
            "model": self.model_name,
            "format": FORMAT,
            "version": self.version,
            "inference_only": self.inference_only,
            "sha256": self.sha256,
            "config": config_tools.to_dict(self.config),
            "data": self.data,
            "train": self.train,
            "parameters": sum(int(torch.Size(s).numel()) for s in self.shapes.values()),
            "tensors": {name: list(shape) for name, shape in sorted(self.shapes.items())},
        }


def _json_field(metadata: dict, key: str, path: Path) -> dict:
    try:
        value = json.loads(metadata[key])
    except KeyError:
        raise DgmError(f"{path} has no {key} metadata; it was not written by dgm") from None
    except json.JSONDecodeError as error:
        raise DgmError(f"{path}: the {key} metadata is not valid JSON ({error.msg})") from None
    if not isinstance(value, dict):
        raise DgmError(f"{path}: the {key} metadata must be a JSON object")
    return value


def read_header(path: Path, *, expected_model: str | None = None) -> CheckpointInfo:
    """Read and check a checkpoint's metadata and tensor shapes without loading weights."""
    path = Path(path)
    if not path.exists():
        raise DgmError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise DgmError(
            f"checkpoint {path} is {'a folder' if path.is_dir() else 'not a regular file'}, not a checkpoint file"
        )
    if path.stat().st_size == 0:
        raise DgmError(f"checkpoint {path} is empty")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except Exception as error:  # safetensors raises its own error types for every malformed header
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        raise DgmError(f"{path} is not a readable safetensors checkpoint ({reason})") from None
    if "dgm.format" not in metadata:
        raise DgmError(f"{path} is a safetensors file without dgm metadata; it was not written by dgm")
    if metadata["dgm.format"] != FORMAT:
        raise DgmError(f"{path} uses checkpoint format {metadata['dgm.format']!r}; this dgm reads format {FORMAT}")
    model_name = metadata.get("dgm.model", "")
    if model_name not in list_models():
        raise DgmError(f"{path} holds an unknown model {model_name!r}; known models: {', '.join(list_models())}")
    if expected_model is not None and model_name != expected_model:
        raise DgmError(f"{path} holds a {model_name} model, not a {expected_model}")
    config = config_tools.from_stored(get_spec(model_name).config_class, _json_field(metadata, "dgm.config", path))
    data = _json_field(metadata, "dgm.data", path)
    train = _json_field(metadata, "dgm.train", path)
    contents = metadata.get("dgm.contents", "")
    if contents not in ("", INFERENCE):
        raise DgmError(f"{path} has dgm.contents {contents!r}; this dgm reads full and {INFERENCE!r} files")
    return CheckpointInfo(
        path,
        model_name,
        config,
        data,
        train,
        metadata.get("dgm.version", "?"),
        shapes,
        inference_only=contents == INFERENCE,
        sha256=metadata.get("dgm.sha256"),
    )


def shape_problems(
    shapes: dict[str, tuple[int, ...]], model: torch.nn.Module, *, inference_only: bool = False
) -> list[str]:
    """What keeps tensors of these names and shapes from loading into `model` (empty: nothing); an
    inference-only file is not expected to hold the tensors only training reads."""
    left_out = model.training_only_tensors() if inference_only else set()
    wanted = {key: tuple(value.shape) for key, value in model.state_dict().items() if key not in left_out}
    missing = sorted(set(wanted) - set(shapes))
    unexpected = sorted(set(shapes) - set(wanted))
    wrong = sorted(k for k in set(wanted) & set(shapes) if wanted[k] != shapes[k])
    problems = []
    if missing:
        problems.append(f"missing tensors {', '.join(missing[:5])}")
    if unexpected:
        problems.append(f"unexpected tensors {', '.join(unexpected[:5])}")
    if wrong:
        k = wrong[0]
        problems.append(
            f"wrong shapes for {', '.join(wrong[:5])} (e.g. {k}: {shapes[k]} in the file, {wanted[k]} wanted)"
        )
    return problems


def _check_shapes(info: CheckpointInfo, model: torch.nn.Module) -> None:
    problems = shape_problems(info.shapes, model, inference_only=info.inference_only)
    if problems:
        raise DgmError(f"{info.path} does not match its own {info.model_name} config: {'; '.join(problems)}")


def check_checkpoint(path: Path, *, expected_model: str | None = None) -> CheckpointInfo:
    """read_header, then the tensor names and shapes against a model built on the meta device (no weights read)."""
    info = read_header(path, expected_model=expected_model)
    with torch.device("meta"):
        _check_shapes(info, get_spec(info.model_name).module_class(info.config))
    return info


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """The SHA-256 of a checkpoint's tensors: each one's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())  # the tensor's own memory, not a copy
    return digest.hexdigest()


def verify_digest(tensors: dict[str, torch.Tensor], recorded: str | None, path: Path, what_to_do: str) -> None:
    """Refuse tensors whose SHA-256 differs from the one recorded when they were written (None: a file from
    before dgm recorded it, which cannot be verified)."""
    if recorded is not None and tensors_sha256(tensors) != recorded:
        raise DgmError(
            f"{path} is corrupted: its tensors do not match the SHA-256 recorded when it was written; {what_to_do}"
        )


def _read_weights(info: CheckpointInfo) -> dict[str, torch.Tensor]:
    """The tensors, checked against the digest recorded when they were written, then for NaN and infinities."""
    try:
        tensors = load_file(str(info.path), device="cpu")
    except Exception as error:
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        raise DgmError(f"{info.path}: the weights cannot be read ({reason})") from None
    verify_digest(tensors, info.sha256, info.path, "restore the file from a copy, or train it again")
    broken = sorted(
        name for name, tensor in tensors.items() if tensor.is_floating_point() and not tensor.isfinite().all()
    )
    if broken:
        raise DgmError(
            f"{info.path} holds NaN or infinite weights ({', '.join(broken[:3])}{', ...' if len(broken) > 3 else ''}); "
            "it cannot sample or evaluate: use a checkpoint from before the run diverged"
        )
    return tensors


def load_checkpoint(path: Path, *, expected_model: str | None = None, device: torch.device | str = "cpu"):
    """Return (model in eval mode on `device`, CheckpointInfo); the model carries the checkpoint's facts
    (path, data_facts, training_facts)."""
    info = check_checkpoint(path, expected_model=expected_model)
    model = get_spec(info.model_name).module_class(info.config)
    load_state(model, _read_weights(info), inference_only=info.inference_only)
    model.path, model.data_facts, model.training_facts = info.path, info.data, info.train
    return model.to(device).eval(), info


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], *, inference_only: bool) -> None:
    """Load a checkpoint's tensors; for an inference-only file, the live weights start at their average and
    the model remembers that it lacks what only training reads (model.inference_only)."""
    if not inference_only:
        model.load_state_dict(state, strict=True)
        return
    model.load_state_dict(state, strict=False)  # the shapes were checked; only training-only tensors are missing
    for _, average, live in model.weight_averages():
        live.load_state_dict(average.state_dict())
    model.inference_only = True


def save_model(
    path: Path, model, *, data: dict | None = None, train: dict | None = None, inference_only: bool = False
) -> None:
    """model.save: its checkpoint with the facts it was loaded with (or those given)."""
    save_checkpoint(
        Path(path),
        model,
        model_name=model.model_name,
        config=model.config,
        data=model.data_facts if data is None else data,
        train=model.training_facts if train is None else train,
        inference_only=inference_only,
    )


def check_initial_weights(info: CheckpointInfo, config) -> None:
    """Refuse a checkpoint whose weights do not fit the network `config` builds (`dgm train --init-from`),
    with a model built on the meta device: before the run folder or the data are touched."""
    with torch.device("meta"):
        model = get_spec(info.model_name).module_class(config)
    _refuse_misfit(info, model)


def _averages_missing_from(info: CheckpointInfo, model: torch.nn.Module) -> list:
    """The moving averages the new run's model keeps (--ema) and the checkpoint does not: they start at the
    checkpoint's live weights, so --ema can be added to a model trained without it."""
    return [
        (prefix, average, live)
        for prefix, average, live in model.weight_averages()
        if not any(name.startswith(prefix) for name in info.shapes)
    ]


def _refuse_misfit(info: CheckpointInfo, model: torch.nn.Module) -> None:
    if info.inference_only:
        raise DgmError(
            f"--init-from {info.path}: an inference-only file (a pretrained model of the zoo) holds no "
            "live weights or discriminator to train on from; start from a checkpoint dgm train wrote"
        )
    shapes = dict(info.shapes)
    for prefix, average, _ in _averages_missing_from(info, model):  # filled from the live weights, not the file
        shapes.update({prefix + name: tuple(tensor.shape) for name, tensor in average.state_dict().items()})
    problems = shape_problems(shapes, model)
    if problems:
        raise DgmError(
            f"--init-from {info.path}: its weights do not fit the network these options build "
            f"({'; '.join(problems)}); leave out the options that change the network, so that the "
            "checkpoint's own are used"
        )


def load_weights_into(model: torch.nn.Module, path: Path, *, model_name: str) -> CheckpointInfo:
    """Give `model`, built from a new run's config, the weights of a checkpoint (`dgm train --init-from`): every
    tensor, its weight average included, by name and shape (an average the checkpoint lacks starts at its live
    weights); a network of another shape is refused."""
    info = read_header(path, expected_model=model_name)
    _refuse_misfit(info, model)
    state = _read_weights(info)
    missing_averages = _averages_missing_from(info, model)
    model.load_state_dict(state, strict=not missing_averages)  # _refuse_misfit checked every other tensor
    for _, average, live in missing_averages:
        average.load_state_dict(live.state_dict())
    return info


def file_sha256(path: Path) -> str:
    """The file's SHA-256, read in 1 MiB blocks: names the exact weights a run started from, wherever they move."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _trained_when(path: Path) -> str:
    """When the checkpoint at `path` was saved, as YYYYMMDD-HHMMSS: its own record, else the file's time."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            saved = json.loads((handle.metadata() or {}).get("dgm.train", "{}")).get("saved")
        return time.strftime("%Y%m%d-%H%M%S", time.strptime(saved, "%Y-%m-%dT%H:%M:%S"))
    except Exception:  # an older checkpoint without the record, or not a checkpoint at all
        return time.strftime("%Y%m%d-%H%M%S", time.localtime(path.stat().st_mtime))


def publish_checkpoint(source: Path, target: Path) -> Path | None:
    """Copy a run's final model to `target` (checkpoints/MODEL.safetensors) without losing what was there.

    A different file already at `target` is first kept beside it as MODEL.<its training date>.safetensors
    (with -2, -3 ... when that name is taken); returns that path, or None when nothing was replaced.
    The copy is atomic: an interruption leaves the previous file or the new one, and the kept copy.
    """
    target = Path(target)
    if target.is_file() and target.read_bytes() == Path(source).read_bytes():
        return None
    kept = None
    if target.is_file():
        stem = f"{target.stem}.{_trained_when(target)}"
        kept = target.with_name(stem + target.suffix)
        number = 2
        while kept.exists():
            kept, number = target.with_name(f"{stem}-{number}{target.suffix}"), number + 1
        with atomic_path(kept) as tmp:
            shutil.copy2(target, tmp)
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return kept
