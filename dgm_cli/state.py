"""The training state a run resumes from: state.safetensors in the run folder.

One file holds everything, so it can never disagree with itself: the model's
tensors, every optimizer's tensors, the random number generator states
(torch's CPU generator and, on CUDA, the device's), and, for a run stopped in
the middle of an epoch, that epoch's permutation and running metric sums.
The scalars (epoch, step, metrics history, best value, optimizer
hyper-parameters, where in the epoch to go on) are JSON in the metadata. Like
checkpoints it is safetensors, never pickle, and is written atomically.

Metadata schema:
    dgm.state    the format, "1"
    dgm.model    the registry name;  dgm.config  the model config (JSON)
    dgm.progress JSON: epoch (completed), step, best_value, history,
                 optimizers (param_groups and non-tensor state per optimizer),
                 position (None, or {"next_batch", "seconds"} inside epoch + 1),
                 wall_seconds (the run's wall-clock time so far)
"""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from dgm_cli import config as config_tools
from dgm_cli.atomic import atomic_path
from dgm_cli.checkpoint import clean_key, tensors_sha256, verify_digest
from dgm_cli.errors import DgmError
from dgm_cli.registry import get_spec

STATE_FORMAT = "1"
STATE_FILE = "state.safetensors"


@dataclass
class EpochPosition:
    """Where an interrupted epoch stopped: its permutation, the batches done and their metric sums."""

    next_batch: int
    seconds: float
    permutation: torch.Tensor
    sums: dict[str, torch.Tensor]


@dataclass
class TrainingState:
    model_name: str
    config: object
    epoch: int  # completed epochs
    step: int
    history: list[dict]
    best_value: float | None
    model: dict[str, torch.Tensor]
    optimizers: list[dict]
    rng: dict[str, torch.Tensor] = field(default_factory=dict)
    position: EpochPosition | None = None
    wall_seconds: float = 0.0  # wall-clock time of all the run's trainings so far, validation and saving included

    @property
    def finished(self) -> bool:
        return ended(self.history, self.position)


def ended(history: list[dict], position) -> bool:
    """The run ended after its last epoch: the trainer records the test-split metrics only then."""
    return position is None and any(key.startswith("test_") for key in history[-1])


def capture_rng(device: torch.device) -> dict[str, torch.Tensor]:
    states = {"rng.torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["rng.cuda"] = torch.cuda.get_rng_state(device)
    return states


def restore_rng(states: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(states["rng.torch"])
    if device.type == "cuda" and "rng.cuda" in states:
        torch.cuda.set_rng_state(states["rng.cuda"], device)


def _split_optimizer(index: int, state_dict: dict, tensors: dict) -> dict:
    """Tensors of one optimizer into `tensors`; returns its JSON-able remainder."""
    scalars = {}
    for param_id, values in state_dict["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{param_id}.{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars[f"{param_id}.{key}"] = value
    return {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _join_optimizer(index: int, stored: dict, tensors: dict) -> dict:
    state: dict[int, dict] = {}
    prefix = f"optimizer.{index}."
    for name, value in tensors.items():
        if name.startswith(prefix):
            param_id, key = name[len(prefix) :].split(".", 1)
            state.setdefault(int(param_id), {})[key] = value
    for name, value in stored["scalars"].items():
        param_id, key = name.split(".", 1)
        state.setdefault(int(param_id), {})[key] = value
    return {"state": state, "param_groups": stored["param_groups"]}


def save_state(path: Path, state: TrainingState) -> None:
    tensors = {f"model.{clean_key(k)}": v.detach().to("cpu").contiguous() for k, v in state.model.items()}
    optimizers = [_split_optimizer(i, optimizer, tensors) for i, optimizer in enumerate(state.optimizers)]
    tensors.update({name: value.to("cpu").contiguous() for name, value in state.rng.items()})
    position = None
    if state.position is not None:
        position = {"next_batch": state.position.next_batch, "seconds": state.position.seconds}
        tensors["epoch.permutation"] = state.position.permutation.to("cpu").contiguous()
        for name, value in state.position.sums.items():
            # one number, or under torchrun one per process (distributed.Parallel.gather)
            tensors[f"epoch.sums.{name}"] = value.detach().to("cpu").contiguous()
    progress = {
        "epoch": state.epoch,
        "step": state.step,
        "best_value": state.best_value,
        "history": state.history,
        "optimizers": optimizers,
        "position": position,
        "wall_seconds": state.wall_seconds,
    }
    metadata = {
        "dgm.state": STATE_FORMAT,
        "dgm.model": state.model_name,
        "dgm.config": config_tools.to_json(state.config),
        "dgm.progress": json.dumps(progress, allow_nan=True),
        "dgm.sha256": tensors_sha256(tensors),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


@dataclass(frozen=True)
class StateHeader:
    """A state file's metadata alone, read without its tensors (for listing runs)."""

    model_name: str
    config: object
    epoch: int
    step: int
    history: list[dict]
    position: dict | None  # {"next_batch", "seconds"} of an epoch stopped in the middle
    wall_seconds: float

    @property
    def finished(self) -> bool:
        return ended(self.history, self.position)


def _read_metadata(path: Path):
    """(spec, config, progress, the tensors' recorded SHA-256 or None) from the header, checked; raises DgmError
    naming the file."""
    if not path.is_file():
        raise DgmError(f"{path} does not exist; a run can be resumed only from a folder with a {STATE_FILE}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
        if metadata.get("dgm.state") != STATE_FORMAT:
            raise DgmError(f"{path} is not a dgm training state (format {metadata.get('dgm.state')!r})")
        spec = get_spec(metadata.get("dgm.model", ""))
        config = config_tools.from_stored(spec.config_class, json.loads(metadata["dgm.config"]))
        progress = json.loads(metadata["dgm.progress"])
        _check_progress(progress)
        return spec, config, progress, metadata.get("dgm.sha256")
    except DgmError:
        raise
    except Exception as error:  # a malformed header, JSON or field
        raise DgmError(f"{path} is not a readable training state ({_reason(error)})") from None


def _reason(error: Exception) -> str:
    return " ".join(str(error).split())[:200] or type(error).__name__


def read_state_header(path: Path) -> StateHeader:
    spec, config, progress, _ = _read_metadata(Path(path))
    return StateHeader(
        spec.name,
        config,
        progress["epoch"],
        progress["step"],
        progress["history"],
        progress["position"],
        progress.get("wall_seconds", 0.0),
    )


def load_state(path: Path) -> TrainingState:
    """Read a state file, checking its metadata before any tensor is read."""
    path = Path(path)
    spec, config, progress, recorded = _read_metadata(path)
    try:
        tensors = load_file(str(path), device="cpu")
        verify_digest(
            tensors, recorded, path, "the run cannot be resumed from it (its last.safetensors may still load)"
        )
        position = None
        if progress["position"] is not None:
            sums = {
                name[len("epoch.sums.") :]: value for name, value in tensors.items() if name.startswith("epoch.sums.")
            }
            position = EpochPosition(
                progress["position"]["next_batch"], progress["position"]["seconds"], tensors["epoch.permutation"], sums
            )
        best = progress["best_value"]
        return TrainingState(
            model_name=spec.name,
            config=config,
            epoch=progress["epoch"],
            step=progress["step"],
            history=progress["history"],
            best_value=None if best is None or (isinstance(best, float) and math.isnan(best)) else best,
            model={name[len("model.") :]: value for name, value in tensors.items() if name.startswith("model.")},
            optimizers=[_join_optimizer(i, stored, tensors) for i, stored in enumerate(progress["optimizers"])],
            rng={name: value for name, value in tensors.items() if name.startswith("rng.")},
            position=position,
            wall_seconds=progress.get("wall_seconds", 0.0),  # states written before it was kept have none
        )
    except DgmError:
        raise
    except Exception as error:  # a malformed field or tensor payload
        raise DgmError(f"{path} is not a readable training state ({_reason(error)})") from None


def _check_progress(progress) -> None:
    """The shapes of the JSON scalars, so a damaged file fails here with its name and not deep in the trainer."""

    def whole(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    position = progress["position"]
    valid = (
        whole(progress["epoch"])
        and whole(progress["step"])
        and isinstance(progress["history"], list)
        and len(progress["history"]) == progress["epoch"] + 1
        and all(isinstance(record, dict) for record in progress["history"])
        and isinstance(progress["optimizers"], list)
        and all(
            isinstance(o, dict) and isinstance(o["param_groups"], list) and isinstance(o["scalars"], dict)
            for o in progress["optimizers"]
        )
        and (position is None or (whole(position["next_batch"]) and isinstance(position["seconds"], (int, float))))
        and (progress["best_value"] is None or isinstance(progress["best_value"], (int, float)))
        and isinstance(progress.get("wall_seconds", 0.0), (int, float))
    )
    if not valid:
        raise ValueError("its progress record is malformed")
