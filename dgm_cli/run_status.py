"""What a run folder's own files say about it, for `dgm runs`.

The status is read from the files every time (the lock, the state's header,
metrics.jsonl), never from an index kept beside them that could drift:
    running      a live process holds train.lock
    diverged     metrics.jsonl ends with an epoch marked "diverged" (the trainer writes it as it stops)
    finished     the state holds the planned epochs and the test-split metrics written at the end
    interrupted  the state holds a position inside an epoch (Ctrl-C or SIGTERM in the middle of one),
                 or ends after an epoch before the planned end (a stop between epochs, or a kill)
    unreadable   the state file cannot be read; no state  nothing was saved yet
"""

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from dgm_cli.errors import DgmError
from dgm_cli.registry import get_spec
from dgm_cli.run_folder import CONFIG_FILE, RunFolder
from dgm_cli.runlock import live_holder
from dgm_cli.state import STATE_FILE, read_state_header


@dataclass(frozen=True)
class RunSummary:
    path: str
    model: str
    dataset: str
    epochs_done: int
    epochs_planned: int | None
    status: str  # running, finished, interrupted, diverged, unreadable, no state
    detail: str  # where it stands, in words
    metric: str | None  # the validation metric that ranks epochs, e.g. val_elbo
    best: float | None
    last: float | None
    train_seconds: float  # the epochs' training time (validation and figures left out)
    wall_seconds: float | None  # the whole run's wall-clock time as of its last save (None: not recorded)

    def as_dict(self) -> dict:
        return asdict(self)


def find_runs(root: Path) -> list[Path]:
    """Every folder under `root` (itself included) that a training wrote: one with a config.json."""
    root = Path(root)
    if not root.is_dir():
        raise DgmError(f"{root} is not a folder; name the folder that holds the run folders (default runs/)")
    return sorted({path.parent for path in root.rglob(CONFIG_FILE)}, key=str)


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def headline_metric(model_name: str) -> tuple[str, str | None]:
    """The validation metric a run is judged by and its better direction (the GAN's has none)."""
    module = get_spec(model_name).module_class
    if module.monitor is not None:
        return f"val_{module.monitor[0]}", module.monitor[1]
    return f"val_{module.headline_metrics[0]}", None


def saved_status(run: RunFolder, model_name: str, epochs_planned, records: list[dict]):
    """What the run's state says: (model, planned epochs, records, status, detail, wall seconds), or the
    values given when it holds no readable state."""
    if not run.state_path.is_file():
        return model_name, epochs_planned, records, "no state", "nothing saved yet", None
    try:
        header = read_state_header(run.state_path)
    except DgmError:
        return model_name, epochs_planned, records, "unreadable", f"{STATE_FILE} cannot be read", None
    if header.finished and (getattr(header.config, "minutes", 0.0) or header.epoch >= header.config.epochs):
        status, detail = "finished", f"after epoch {header.epoch}"
    elif header.position is not None:
        status, detail = "interrupted", f"at epoch {header.epoch + 1}, batch {header.position['next_batch']}"
    else:
        status, detail = "interrupted", f"after epoch {header.epoch}"
    return header.model_name, header.config.epochs, header.history, status, detail, header.wall_seconds or None


def headline_values(model_name: str, records: list[dict]) -> tuple[str | None, float | None, list[float]]:
    """The model's headline validation metric, its best value and its finite values epoch by epoch."""
    try:
        metric, direction = headline_metric(model_name)
    except DgmError:  # no config, or a model this dgm does not know
        return None, None, []
    if metric is None:
        return None, None, []
    values = [v for v in (_number(r.get(metric)) for r in records) if v is not None and math.isfinite(v)]
    best = None
    if values and direction is not None:
        best = max(values) if direction == "max" else min(values)
    return metric, best, values


def summarize(folder: Path) -> RunSummary:
    """One run's summary. Its numbers are those of metrics.jsonl while it runs (written every epoch), else
    those of its state (what --resume continues from, which --save-every may leave a few epochs behind)."""
    run = RunFolder(folder, writes=False)
    try:
        facts = run.read_config()
    except DgmError:
        facts = {}
    try:
        written = run.read_metrics()
    except (OSError, ValueError):
        written = []
    good = [record for record in written if not record.get("diverged")]
    model_name, epochs_planned = facts.get("model") or "?", (facts.get("config") or {}).get("epochs")
    model_name, epochs_planned, records, status, detail, wall_seconds = saved_status(
        run, model_name, epochs_planned, good
    )
    if written and written[-1].get("diverged"):
        status, detail = "diverged", f"in epoch {written[-1]['epoch']}"
    holder = live_holder(run.path)
    if holder is not None:
        status, detail = "running", f"process {holder['pid']} on {holder.get('host')}, since {holder.get('started')}"
        records = good or records
    metric, best, values = headline_values(model_name, records)
    return RunSummary(
        path=str(folder),
        model=model_name,
        dataset=str((facts.get("data") or {}).get("name", "?"))
        + (" (fallback)" if (facts.get("data") or {}).get("fallback") else ""),
        epochs_done=max((r.get("epoch", 0) for r in records), default=0),
        epochs_planned=epochs_planned,
        status=status,
        detail=detail,
        metric=metric,
        best=best,
        last=values[-1] if values else None,
        train_seconds=round(sum(_number(r.get("seconds")) or 0.0 for r in records), 1),
        wall_seconds=None if wall_seconds is None else round(wall_seconds, 1),
    )


def list_runs(root: Path, *, model: str | None = None) -> list[RunSummary]:
    summaries = [summarize(folder) for folder in find_runs(root)]
    return [summary for summary in summaries if model is None or summary.model == model]
