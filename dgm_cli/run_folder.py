"""A run folder: where one training keeps everything it leaves on disk, and how it is opened again.

    runs/<model>/<name>/
        config.json        what the run is: model, config, data (identity and where they were read), seed,
                           device, precision, where the final model is copied, whether TensorBoard logs
        metrics.jsonl      one JSON record per epoch, epoch 0 being the untrained model
        curves.png         the records as curves
        samples/epoch_XXX[_binary|_raw].png   manifold/epoch_XXX.png
        last.safetensors   best.safetensors   the model after the newest / the best epoch
        state.safetensors  what --resume continues from (state.py)
        train.lock         while a training runs (runlock.py)
        events.out.tfevents.*   with --tensorboard (tensorboard_log.py)

The training loop says what happens in an epoch; this module says where it is
kept. Under torchrun only rank 0 writes: the other ranks hold a RunFolder with
`writes=False`, whose writing methods do nothing, so the loop needs no rank
checks around them. Every file is written atomically (atomic.py).
"""

import json
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from dgm_cli import config as config_tools
from dgm_cli.atomic import ensure_writable_dir, remove_stale_temporaries, write_text
from dgm_cli.checkpoint import save_checkpoint
from dgm_cli.data import Dataset, reload_dataset
from dgm_cli.errors import DgmError
from dgm_cli.runlock import live_holder, run_lock
from dgm_cli.state import STATE_FILE, TrainingState, load_state

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
LAST_FILE = "last.safetensors"
BEST_FILE = "best.safetensors"
CURVES_FILE = "curves.png"
FIGURE_FOLDERS = ("samples", "manifold")
RUNS_ROOT = Path("runs")


def default_run_path(model_name: str) -> Path:
    return RUNS_ROOT / model_name / time.strftime("%Y%m%d-%H%M%S")


def resume_command(model_name: str, folder: Path) -> str:
    return f"dgm train {model_name} --resume {folder}"


class RunFolder:
    def __init__(self, path: Path, *, writes: bool = True):
        self.path = Path(path)
        self.writes = writes  # False in the processes other than rank 0 under torchrun

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def state_path(self) -> Path:
        return self.path / STATE_FILE

    @property
    def last_path(self) -> Path:
        return self.path / LAST_FILE

    def resume_hint(self, model_name: str) -> str | None:
        """The command that continues this run, when it holds a saved state; None when it holds none."""
        return resume_command(model_name, self.path) if self.state_path.is_file() else None

    @property
    def curves_path(self) -> Path:
        return self.path / CURVES_FILE

    def figure_path(self, kind: str, epoch: int, variant: str = "") -> Path:
        """samples/epoch_007.png, samples/epoch_007_binary.png, manifold/epoch_007.png ..."""
        return self.path / kind / f"epoch_{epoch:03d}{'_' + variant if variant else ''}.png"

    # ------------------------------------------------------------ life of the folder

    def refuse_existing(self, *, holding_lock: bool = False) -> None:
        """A folder that already holds a run is never overwritten; one in use by a training says so first."""
        if not self.writes:
            return
        if not holding_lock:
            self.refuse_busy("wait for it or choose another --out")
        if self.last_path.exists():
            raise DgmError(
                f"{self.path} already holds a training run; choose another --out, or continue it with --resume "
                f"{self.path} (nothing was changed)"
            )

    def prepare(self) -> None:
        """Create the folder and prove it is writable, before any long work starts."""
        if self.writes:
            ensure_writable_dir(self.path)

    def lock(self):
        """One training at a time in this folder (runlock.py); only the writing process takes it."""
        return run_lock(self.path) if self.writes else nullcontext()

    def remove_stale_temporaries(self) -> None:
        """Temporaries a process killed mid-write left behind; call it holding the lock, when no one writes."""
        if self.writes:
            remove_stale_temporaries(self.path, subfolders=FIGURE_FOLDERS)

    # ------------------------------------------------------------ records

    def write_config(self, facts: dict) -> None:
        if self.writes:
            write_text(self.config_path, json.dumps(facts, indent=2))

    def read_config(self) -> dict:
        try:
            facts = json.loads(self.config_path.read_text())
            if not isinstance(facts, dict) or not isinstance(facts["seed"], int) or not isinstance(facts["data"], dict):
                raise ValueError("it does not record the run's seed and data")
            return facts
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise DgmError(f"{self.config_path} is missing or damaged ({error}); the run cannot be resumed") from None

    def write_metrics(self, history: list[dict]) -> None:
        if self.writes:
            write_text(self.metrics_path, "".join(json.dumps(record) + "\n" for record in history))

    def read_metrics(self) -> list[dict]:
        """The records in metrics.jsonl; [] when there are none yet."""
        if not self.metrics_path.is_file():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    def refuse_busy(self, what_to_do: str) -> None:
        """Refuse a folder that a live training holds (its train.lock), naming the process."""
        holder = live_holder(self.path)
        if holder is not None:
            raise DgmError(
                f"{self.path} is in use by another training (process {holder['pid']} on {holder.get('host')}, "
                f"started {holder.get('started')}); {what_to_do}"
            )

    def forget_checkpoints(self) -> None:
        """Remove the checkpoints of a run whose first save failed (no state was ever written), so that the folder
        holds no run and a second attempt with the same --out is accepted."""
        for path in (self.last_path, self.path / BEST_FILE):
            path.unlink(missing_ok=True)

    def save_model(self, name: str, model, *, model_name: str, config, data: dict, train: dict) -> None:
        """last.safetensors or best.safetensors, with the time it was saved (checkpoint.publish_checkpoint names
        the copies it keeps by it)."""
        if self.writes:
            facts = {**train, "saved": time.strftime("%Y-%m-%dT%H:%M:%S")}
            save_checkpoint(self.path / name, model, model_name=model_name, config=config, data=data, train=facts)


# ---------------------------------------------------------------- reopening a run for --resume


@dataclass(frozen=True)
class ResumedRun:
    """Everything `--resume` needs, read from the run's own files."""

    folder: Path
    state: TrainingState
    config: object  # the stored config, with --epochs applied
    seed: int
    dataset: Dataset
    precision: str
    checkpoint_dir: Path | None
    tensorboard: bool
    save_every: int


def find_run(name: str, model_name: str) -> Path:
    """The folder `--resume NAME` means: NAME itself, or for 'last' the newest run of the model under runs/."""
    if name != "last":
        return Path(name)
    runs = [path.parent for path in (RUNS_ROOT / model_name).glob(f"*/{STATE_FILE}")]
    if not runs:
        raise DgmError(f"no run of the {model_name} to resume under {RUNS_ROOT / model_name}/; name its folder")
    return max(runs, key=lambda folder: (folder / STATE_FILE).stat().st_mtime)


def reopen_run(folder: Path, model_name: str, *, epochs: int | None = None, data_dir: Path | None = None) -> ResumedRun:
    """Open a run to continue it: its state, its settings, and its data found again and checked by content.

    `epochs` extends (or restates) the planned epochs; `data_dir` points at the data when they have moved.
    """
    folder = Path(folder)
    run = RunFolder(folder)
    if not run.state_path.is_file():
        what = "does not exist" if not folder.exists() else f"holds no {STATE_FILE}"
        raise DgmError(f"cannot resume {folder}: it {what}; name the folder of a run that dgm train wrote")
    state = load_state(run.state_path)
    if state.model_name != model_name:
        raise DgmError(
            f"{folder} holds a {state.model_name} run; resume it with dgm train {state.model_name} --resume {folder}"
        )
    facts = run.read_config()
    config = state.config
    minutes = getattr(config, "minutes", 0.0)
    if minutes and epochs is not None:
        raise DgmError(f"{folder} trains for a budget of {minutes:g} minutes, not for epochs; leave out --epochs")
    if minutes and state.finished:
        raise DgmError(
            f"{folder} has spent its budget of {minutes:g} minutes; to train on, start a new run from its weights: "
            f"dgm train {model_name} --init-from {folder / 'last.safetensors'} --minutes M"
        )
    if epochs is not None:
        config = config_tools.from_dict(type(config), {**config_tools.to_dict(config), "epochs": epochs})
    if config.epochs < state.epoch:
        raise DgmError(f"{folder} has already trained {state.epoch} epochs; --epochs must be at least that")
    if state.finished and state.epoch >= config.epochs:
        raise DgmError(
            f"{folder} has finished its {config.epochs} epochs; pass --epochs with a larger number to train on"
        )
    stored_checkpoint_dir = facts.get("checkpoint_dir")
    return ResumedRun(
        folder=folder,
        state=state,
        config=config,
        seed=facts["seed"],
        dataset=reload_dataset(facts["data"], data_dir, run=str(folder)),
        precision=facts.get("precision", "fp32"),  # runs from before precision was recorded trained in fp32
        checkpoint_dir=None if stored_checkpoint_dir is None else Path(stored_checkpoint_dir),
        tensorboard=bool(facts.get("tensorboard", False)),
        save_every=int(facts.get("save_every", 1)),
    )
