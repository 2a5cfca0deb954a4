"""Starting, continuing and reporting a training run: what `dgm train` and `dgm.train` call.

This file decides what a run is (its config from the defaults, an --init-from
checkpoint, a preset and the fields given; or, to resume, the run's own
records), reads its data, and hands the loop in trainer.py a `RunSettings`. What
comes back is a `Run`: the folder, its records, its checkpoints and whether it
finished or was interrupted (and saved) by Ctrl-C or SIGTERM.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dgm_cli import config as config_tools
from dgm_cli.data import Dataset, load_dataset
from dgm_cli.errors import DgmError, Interrupted
from dgm_cli.progress import Reporter
from dgm_cli.registry import budget_defaults, get_spec, preset_overrides
from dgm_cli.run_folder import BEST_FILE, LAST_FILE, RunFolder, default_run_path, find_run, reopen_run

# Settings whose left-out value (None) means: as the resumed run recorded, else this default.
RECORDED_SETTINGS = {"save_every": 1, "precision": "fp32", "tensorboard": False, "checkpoint_dir": Path("checkpoints")}
# What a new run takes; a resumed run keeps its own, and giving one is refused.
NEW_RUN_SETTINGS = ("data", "val_size", "image_fit", "skip_bad_images", "seed", "init_from")


@dataclass
class Run:
    """A training run as its folder holds it: `records` are metrics.jsonl's (epoch 0 is before training; the last
    holds the final test metrics); status is "finished" or "interrupted" (its state saved, `message` says how
    to continue)."""

    model: str
    folder: Path
    records: list[dict]
    status: str
    data: dict
    message: str = ""
    checkpoint: Path | None = None  # the final model's copy in checkpoint_dir

    @property
    def last(self) -> Path:
        return self.folder / LAST_FILE

    @property
    def best(self) -> Path | None:
        """The epoch with the best validation metric; None for a model without one (the GAN)."""
        return self.folder / BEST_FILE if (self.folder / BEST_FILE).is_file() else None

    def load(self, which: str = "best", *, device: str = "auto"):
        """The run's best (else last) or last model, as dgm.load gives it."""
        from dgm_cli.loading import load

        path = self.best if which == "best" and self.best is not None else self.last
        return load(path, model=self.model, device=device)


def train(
    name: str,
    config=None,
    *,
    data=None,
    out: Path | None = None,
    resume: bool | str | Path = False,
    init_from: Path | None = None,
    data_dir: Path | None = None,
    val_size: int | None = None,
    image_fit: str | None = None,
    skip_bad_images: bool | None = None,
    seed: int | None = None,
    device: str = "auto",
    checkpoint_dir: Path | None = None,
    save_every: int | None = None,
    compile: bool = False,
    precision: str | None = None,
    sync_batchnorm: bool = False,
    tensorboard: bool | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    reporter: Reporter | None = None,
    **fields,
) -> Run:
    """Train a model as `dgm train NAME` does, into the run folder `out` (default runs/NAME/DATE-TIME).

    config: a config object or a dict of fields; fields: more config fields (`dgm train NAME --help` lists them,
    preset="NAME" a published configuration). Fields left out come from init_from's checkpoint (a new run
    from its weights), then the preset, then the defaults. data: "mnist" (default, falling back to the bundled
    mnist-mini), "fashion-mnist", "mnist-mini", a folder of images, or a Dataset.
    resume: True (the run in `out`), a run folder, or "last": continue it with its own settings; only epochs=,
    device and the recorded settings (checkpoint_dir, save_every, precision, tensorboard) may be given.
    on_epoch(record): called with each epoch's record as it ends (metrics.jsonl's line), e.g. to plot live.
    Ctrl-C or SIGTERM finishes the step, saves and returns the Run with status "interrupted"."""
    from dgm_cli import distributed

    as_path = lambda value: None if value is None else Path(value)  # noqa: E731  (a notebook passes strings)
    out, init_from, data_dir, checkpoint_dir = map(as_path, (out, init_from, data_dir, checkpoint_dir))
    parallel, device_name = distributed.start(device)
    finished = False
    try:
        given = {**chosen_fields(config), **fields}
        news = {
            "data": data,
            "val_size": val_size,
            "image_fit": image_fit,
            "skip_bad_images": skip_bad_images,
            "seed": seed,
            "init_from": init_from,
        }
        recorded = {
            "save_every": save_every,
            "precision": precision,
            "tensorboard": tensorboard,
            "checkpoint_dir": checkpoint_dir,
        }
        run = run_in_process(
            name,
            given,
            news,
            recorded,
            out=out,
            resume=resume,
            data_dir=data_dir,
            device_name=device_name,
            parallel=parallel,
            compile=compile,
            sync_batchnorm=sync_batchnorm,
            on_epoch=on_epoch,
            reporter=reporter or Reporter(),
        )
        finished = run.status == "finished"
        return run
    finally:
        distributed.stop(finished=finished)


def chosen_fields(config) -> dict:
    """The fields a `config` argument chooses: a dict's keys; a config object's fields that differ from the
    model's defaults (an object holds every field, and its defaults are no choice)."""
    if config is None or isinstance(config, dict):
        return dict(config or {})
    defaults = config_tools.defaults(type(config))
    return {
        key: value
        for key, value in config_tools.to_dict(config).items()
        if value != defaults.get(key, value) or key not in defaults
    }


def run_in_process(
    name,
    given: dict,
    news: dict,
    recorded: dict,
    *,
    out,
    resume,
    data_dir,
    device_name,
    parallel,
    compile,
    sync_batchnorm,
    on_epoch,
    reporter: Reporter,
) -> Run:
    """One process's training; under torchrun every process runs this."""
    from dgm_cli.device import resolve_device
    from dgm_cli.trainer import RunSettings
    from dgm_cli.trainer import train as loop_over_epochs

    device = resolve_device(device_name)
    if recorded["tensorboard"]:  # before any data are read or anything is printed
        from dgm_cli.tensorboard_log import require_tensorboard

        require_tensorboard()
    reporter = reporter if parallel.is_main else Reporter()
    if resume:
        target = out if resume is True else resume
        if parallel.is_main and target is not None:  # before anything is read or said: a busy run is not "resumed"
            RunFolder(Path(find_run(str(target), name))).refuse_busy(
                "wait for it to finish, or stop it, before resuming"
            )
        folder, state, config, seed, dataset = resumed(name, given, news, recorded, resume, out, data_dir)
    else:
        state, seed = None, 0 if news["seed"] is None else news["seed"]
        config = new_config(name, given, news["init_from"], reporter)
        folder = Path(out) if out is not None else default_run_path(name)
        RunFolder(folder, writes=parallel.is_main).refuse_existing()  # before the data are read
        dataset = read_training_data(news, data_dir, reporter)
    settings = RunSettings(
        out_dir=folder,
        seed=seed,
        device=device,
        parallel=parallel,
        compile=compile,
        sync_batchnorm=sync_batchnorm,
        init_from=news["init_from"],
        on_epoch=on_epoch,
        **{key: default if recorded[key] is None else recorded[key] for key, default in RECORDED_SETTINGS.items()},
    )
    announce(name, dataset, settings, state, reporter)
    try:
        records = loop_over_epochs(name, config, dataset, settings, reporter.console, resume=state)
    except Interrupted as stopped:
        return Run(
            name,
            folder,
            RunFolder(folder, writes=False).read_metrics(),
            "interrupted",
            dataset.describe(),
            str(stopped),
        )
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once, without saving; the last saved state is kept
        hint = RunFolder(folder, writes=False).resume_hint(name)
        if parallel.is_main and hint is not None:
            reporter.note(f"interrupted at once; the last saved state is kept: continue with: {hint}")
        raise
    trained = records and records[-1].get("step", 0) > 0  # an untrained model (--epochs 0) is not copied
    copy = settings.checkpoint_dir / f"{name}.safetensors" if settings.checkpoint_dir and trained else None
    return Run(name, folder, records, "finished", dataset.describe(), checkpoint=copy)


def resumed(name: str, given: dict, news: dict, recorded: dict, resume, out, data_dir):
    """The run `resume` names, reopened, after checking that only what may change was given; the recorded
    settings not given now are filled in `recorded`."""
    refused = [f"{key}=" for key in given if key != "epochs"] + [
        f"{key}=" for key, value in news.items() if value is not None
    ]
    if refused:
        raise DgmError(
            f"resuming continues a run with its own settings; leave out {', '.join(refused)} "
            "(only epochs, the device and checkpoint_dir, save_every, precision, tensorboard may change)"
        )
    if resume is True:
        if out is None:
            raise DgmError("resume=True continues the run in `out`; name it (or pass the folder as resume=)")
        resume = out
    reopened = reopen_run(find_run(str(resume), name), name, epochs=given.get("epochs"), data_dir=data_dir)
    for key in RECORDED_SETTINGS:
        if recorded[key] is None:
            recorded[key] = getattr(reopened, key)
    return reopened.folder, reopened.state, reopened.config, reopened.seed, reopened.dataset


def new_config(name: str, given: dict, init_from: Path | None, reporter: Reporter | None = None):
    """A new run's config: the defaults, then (a budget from scratch, without a preset) the configuration tuned
    for the budget, then the config of the init_from checkpoint, then the fields of a preset, then the fields
    given; refused where a given field would change nothing in that configuration."""
    spec = get_spec(name)
    if given.get("minutes") and "epochs" in given:
        raise DgmError("--epochs and --minutes both say how long to train; give one")
    values = dict(given)
    if init_from is not None:  # the checkpoint's fields that are options (not those the data set, such as classes)
        from dgm_cli.checkpoint import read_header

        start = read_header(init_from, expected_model=name)
        stored = config_tools.to_dict(start.config)
        # A budget belongs to the run that had it: a run from its weights trains for its own --minutes (or epochs).
        carried = {k: v for k, v in stored.items() if k not in config_tools.data_fields(spec.config_class)}
        values = {**{k: v for k, v in carried.items() if k != "minutes"}, **given}
    # A checkpoint's recorded preset is already in its fields; a preset named now applies over them.
    from_preset = preset_overrides(spec, values.get("preset")) if init_from is None or "preset" in given else {}
    chosen = set(given)
    if "epochs" in given:  # a run of epochs, whatever budget a preset may name
        values["minutes"], chosen = 0.0, chosen | {"minutes"}
    tuned = (
        None if init_from is not None or "preset" in values else budget_defaults(spec, values.get("minutes"), chosen)
    )
    from_budget = {k: v for k, v in tuned.fields.items() if k not in chosen} if tuned is not None else {}
    if from_budget and reporter is not None:
        reporter.note(
            f"a {values['minutes']:g}-minute budget trains with {tuned.words()} (the best of a search on the "
            f"validation split at {tuned.searched_at:g} minutes, docs/{tuned.record}); options given win"
        )
    config = config_tools.from_dict(
        spec.config_class, {**from_budget, **values, **{k: v for k, v in from_preset.items() if k not in chosen}}
    )
    refuse_inapplicable(config, set(given))
    if init_from is not None:
        from dgm_cli.checkpoint import check_initial_weights

        check_initial_weights(start, config)
    return config


def refuse_inapplicable(config, given: set[str]) -> None:
    """Refuse fields given that the configuration does not use (the flow's hidden units of another body)."""
    inapplicable = getattr(config, "inapplicable_fields", dict)()
    refused = sorted(given & set(inapplicable))
    if refused:
        option = lambda name: "--" + name.replace("_", "-")  # noqa: E731
        reasons = "; ".join(f"{option(name)} belongs to {inapplicable[name]}" for name in refused)
        raise DgmError(
            f"{', '.join(map(option, refused))} would change nothing in this configuration ({reasons}); "
            f"leave {'them' if len(refused) > 1 else 'it'} out or choose the setting it belongs to"
        )


def read_training_data(news: dict, data_dir, reporter: Reporter) -> Dataset:
    if isinstance(news["data"], Dataset):
        return news["data"]
    return reporter.read_data(
        lambda progress: load_dataset(
            None if news["data"] is None else str(news["data"]),
            data_dir,
            fit=news["image_fit"] or "crop",
            skip_bad=bool(news["skip_bad_images"]),
            progress=progress,
            val_size=news["val_size"],
        )
    )


def announce(name: str, dataset: Dataset, settings, state, reporter: Reporter) -> None:
    """What is about to happen, in a line or three: the fallback data, the run, where it starts from."""
    if dataset.fallback_reason:
        reporter.note(dataset.fallback_reason, warning=True)
        reporter.note(
            f"training on the bundled mnist-mini subset instead ({len(dataset.train):,} train / "
            f"{len(dataset.val):,} val / {len(dataset.test):,} test images); its numbers are not comparable "
            "with full-MNIST results.",
            warning=True,
        )
    start = f"; starting from the weights of {settings.init_from}" if settings.init_from is not None else ""
    if state is not None:
        start = (
            f"; resuming after epoch {state.epoch}"
            if state.position is None
            else f"; resuming epoch {state.epoch + 1} at batch {state.position.next_batch}"
        )
    parallel = settings.parallel
    processes = f" x {parallel.world_size} processes (torchrun)" if parallel.enabled else ""
    reporter.note(
        f"training {name} on {dataset.name} ({len(dataset.train):,} images) on {settings.device}"
        f"{processes}; run folder {settings.out_dir}{start}"
    )
