"""The `dgm` command line: parse options, call the library, print.

No model logic lives here and no command branches on a model's name: model
names come from the registry, and `dgm train MODEL` options are generated from
each model's config dataclass. Human output and progress go to stderr;
`--json` prints exactly one JSON object on stdout. A DgmError becomes a
one-line message and exit status 1 (in `user_errors`, the one place that does
this); usage errors exit 2; tracebacks appear only with --debug.
"""

import contextlib
import functools
import inspect
import json
import os
import sys
from dataclasses import fields
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional, get_type_hints

import torch
import typer

from dgm_cli import __version__
from dgm_cli import config as config_tools
from dgm_cli.errors import DgmError, Interrupted
from dgm_cli.progress import make_progress, result_console, stderr_console
from dgm_cli.registry import get_spec, list_models, preset_of
from dgm_cli.speed import flush_subnormals

app = typer.Typer(
    name="dgm",
    help="Train, sample and evaluate deep generative models on MNIST-sized images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
train_app = typer.Typer(help="Train a model from scratch (one subcommand per registered model).", no_args_is_help=True)
app.add_typer(train_app, name="train")

_settings = {"debug": False}


def user_errors(command):
    """Turn expected failures into one line on stderr and an exit status; keep tracebacks for --debug."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        # Under torchrun rank 0 speaks for all; another rank's own failure is printed with its rank.
        rank = int(os.environ.get("RANK", "0") or 0)
        where = f"[rank {rank}] " if rank else ""
        try:
            return command(*args, **kwargs)
        except DgmError as error:
            if _settings["debug"]:
                raise
            typer.echo(f"{where}error: {error}", err=True)
            raise typer.Exit(1) from None
        except torch.OutOfMemoryError:
            if _settings["debug"]:
                raise
            typer.echo("error: the device ran out of memory; try a smaller --batch-size or --device cpu", err=True)
            raise typer.Exit(1) from None
        except Interrupted as stopped:
            if not rank:
                typer.echo(f"interrupted by {stopped}", err=True)
            raise typer.Exit(130) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dgm {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.", metavar="")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks for errors.", metavar="")] = False,
    ctx: typer.Context = None,
) -> None:
    _settings["debug"] = debug
    if ctx is not None and ctx.invoked_subcommand not in (None, "train") and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Several copies of another command would each do all the work, and write the same files.
        typer.echo(f"error: only dgm train runs data-parallel; run dgm {ctx.invoked_subcommand} without torchrun", err=True)
        raise typer.Exit(1)


# ---------------------------------------------------------------- shared option types

ModelName = Enum("ModelName", {name: name for name in list_models()}, type=str)


class SplitName(str, Enum):
    train = "train"
    val = "val"
    test = "test"


def _fit_enum():
    from dgm_cli.image_folder import FITS

    return Enum("ImageFit", {name: name for name in FITS}, type=str)


ImageFit = _fit_enum()


def _precision_enum():
    from dgm_cli.speed import PRECISIONS

    return Enum("Precision", {name: name for name in PRECISIONS}, type=str)


Precision = _precision_enum()


def _check_device(value: str) -> str:
    from dgm_cli.device import DEVICE_PATTERN

    if not DEVICE_PATTERN.match(value):
        raise typer.BadParameter(f"'{value}' is not a device; use auto, cpu, cuda or cuda:N")
    return value


ModelArg = Annotated[ModelName, typer.Argument(help="Model name, as `dgm models` lists them.")]
CheckpointArg = Annotated[
    Optional[Path],
    typer.Argument(
        help="A .safetensors checkpoint, or a run folder (its best.safetensors, else last.safetensors); default "
        "checkpoints/MODEL.safetensors.",
        show_default=False,
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.", callback=_check_device)]
SeedOpt = Annotated[int, typer.Option("--seed", min=0, max=2**63 - 1, help="Random seed.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.", metavar="")]
DataDirOpt = Annotated[
    Optional[Path],
    typer.Option("--data-dir", help="Folder holding MNIST/raw/*.gz (default $DGM_DATA_DIR, else ~/.cache/dgm/data); "
                 "for a model trained on an image folder that has moved, the folder's new place."),
]


LabelOpt = Annotated[
    Optional[int],
    typer.Option("--label", min=0, help="Conditional models: the class to draw (0..9 for MNIST; an image folder's class index).", show_default=False),
]
def _sampler_enum():
    from dgm_cli.models.diffusion import SAMPLERS

    return Enum("SamplerName", {name: name for name in SAMPLERS}, type=str)


SamplerName = _sampler_enum()
SamplerOpt = Annotated[
    Optional[SamplerName],
    typer.Option("--sampler", help="Diffusion models: ddim (--steps of them; deterministic unless --eta) or "
                 "ancestral (all T steps); default ddim.", show_default=False),
]
StepsOpt = Annotated[
    Optional[int],
    typer.Option("--steps", "--denoising-steps", min=1, max=10_000, help="Diffusion models: DDIM denoising steps "
                 "(default: the model's --sample-steps).", show_default=False),
]
EtaOpt = Annotated[
    Optional[float],
    typer.Option("--eta", min=0.0, max=1.0, help="Diffusion models, DDIM: the noise each step adds, from 0 "
                 "(deterministic, the default) to 1 (the ancestral sampler's own posterior noise, on the --steps "
                 "steps: the ancestral sampler respaced).", show_default=False),
]
GuidanceOpt = Annotated[
    Optional[float],
    typer.Option("--guidance", min=0.0, max=100.0, help="Conditional diffusion models: classifier-free guidance "
                 "weight w, eps = (1 + w) eps(x, y) - w eps(x) (default 0: none).", show_default=False),
]


def _configure_sampler(net, sampler: Optional[Enum], steps: Optional[int], guidance: Optional[float],
                       eta: Optional[float] = None) -> dict | None:  # fmt: skip
    """Set an iterative sampler's method, step count, noise and guidance from the options; refuse them for a model
    that draws in one pass. Returns the sampler as the report records it (None for such a model)."""
    options = (("--sampler", sampler), ("--steps", steps), ("--eta", eta), ("--guidance", guidance))
    given = [flag for flag, value in options if value is not None]
    if "iterative_sampler" not in net.capabilities:
        if given:
            raise DgmError(f"{', '.join(given)} choose(s) a diffusion model's sampler; this model draws in one pass")
        return None
    if sampler is not None:
        net.sampler.method = sampler.value
    if steps is not None:
        if steps > net.timesteps:
            raise DgmError(f"--steps {steps} is more than the model's {net.timesteps} diffusion steps")
        net.sampler.steps = steps
    if eta is not None:
        if net.sampler.method != "ddim":
            raise DgmError("--eta sets DDIM's noise; the ancestral sampler draws its own at every one of the T steps")
        net.sampler.eta = eta
    if guidance:
        if not net.classes:
            raise DgmError("--guidance needs a conditional model (trained with --conditional); leave it out")
        net.sampler.guidance = guidance
    return net.sampler.describe()


def _sampler_words(chosen: dict | None) -> str:
    """', ddim 50 steps, guidance 2' for a status line; '' for a model that draws in one pass."""
    if chosen is None:
        return ""
    words = f", {chosen['sampler']}" + (f" {chosen['steps']} steps" if chosen["sampler"] == "ddim" else "")
    words += f", eta {chosen['eta']:g}" if chosen["eta"] else ""
    return words + (f", guidance {chosen['guidance']:g}" if chosen["guidance"] else "")


@contextlib.contextmanager
def _denoising_progress(net, n: int):
    """A progress bar over an iterative sampler's denoising steps while `n` images are drawn."""
    if "iterative_sampler" not in net.capabilities:
        yield
        return
    with make_progress(stderr_console()) as bar:
        task = bar.add_task(f"{net.sampler.method} sampler, {n:,} images", total=net.denoising_steps(n))
        net.on_denoising_step = lambda count: bar.advance(task, count)
        try:
            yield
        finally:
            net.on_denoising_step = None


RawOpt = Annotated[
    bool, typer.Option(
        "--raw", help="Sample from the live weights, not their moving average (models trained with --ema).", metavar=""
    )
]
DATASET_HELP = "mnist, fashion-mnist, mnist-mini, or a folder of images (PNG, JPEG, BMP, WebP; one subfolder per class)"
CheckpointDatasetOpt = Annotated[
    Optional[str],
    typer.Option("--dataset", help=f"{DATASET_HELP}; default: the data the model was trained on.", show_default=False),
]


def _read_data(load, console=None):
    """Run a data loader with a progress bar for the decoding of an image folder, then print what loading did."""
    console = console or stderr_console()
    with make_progress(console) as bar:

        def decoding(total: int):
            task = bar.add_task("decoding images", total=total)
            return lambda count: bar.advance(task, count)

        dataset = load(decoding)
    for note in dataset.notes:
        console.print(note, markup=False, soft_wrap=True)
    return dataset


def _checkpoint_dataset(info, dataset: Optional[str], data_dir: Optional[Path]):
    """The dataset a checkpoint was trained on (or the one named), never silently replaced by a fallback; an
    image folder is checked to hold the images it was trained on."""
    from dgm_cli.data import load_dataset, trained_dataset

    # The checkpoint's own named dataset, named again, is the trained one: split as it was (its validation size).
    if dataset is not None and (dataset != info.data.get("name") or info.data.get("kind") == "image-folder"):
        return _read_data(lambda progress: load_dataset(dataset, data_dir, progress=progress))
    return _read_data(lambda progress: trained_dataset(info.data, data_dir, what=str(info.path), progress=progress))


def _checkpoint(model: Enum, path: Optional[Path]) -> Path:
    from dgm_cli.checkpoint import default_checkpoint

    if path is not None:
        return _checkpoint_file(path)
    default = default_checkpoint(model.value)
    shipped = get_spec(model.value).shipped_checkpoint
    if not default.exists() and shipped is not None:
        stderr_console().print(f"using the shipped {model.value} {shipped}", markup=False)
        return shipped
    if not default.exists():
        raise DgmError(f"no checkpoint given and {default} does not exist; train one with `dgm train {model.value}` or pass a path")
    return default


def _checkpoint_file(path: Path) -> Path:
    """The checkpoint a path names: the file itself, or a run folder's best.safetensors, else its last (saying which)."""
    if not path.is_dir():
        return path
    for name, what in (("best.safetensors", "its best epoch"), ("last.safetensors", "its last epoch")):
        if (path / name).is_file():
            stderr_console().print(f"using {path / name} ({what})", markup=False)
            return path / name
    raise DgmError(f"{path} is a folder without best.safetensors or last.safetensors; pass a run folder or a checkpoint file")


def _print_json(payload: dict) -> None:
    typer.echo(json.dumps(payload, indent=None, sort_keys=False))


def _load(model: Enum, checkpoint: Optional[Path], device: str):
    from dgm_cli.checkpoint import load_checkpoint
    from dgm_cli.device import resolve_device

    return load_checkpoint(_checkpoint(model, checkpoint), expected_model=model.value, device=resolve_device(device))


# ---------------------------------------------------------------- dgm train MODEL

COMMON_TRAIN_OPTIONS = (
    "seed", "device", "out", "dataset", "val_size", "image_fit", "skip_bad_images", "data_dir", "checkpoint_dir", "resume", "init_from",
    "save_every", "compile", "precision", "sync_batchnorm", "tensorboard", "json_output", "ctx",
)  # fmt: skip
# What a resumed run may change: where and how it runs and what it logs, not what it computes (and --epochs,
# to extend it). --precision changes the arithmetic's rounding, like --device; both are recorded in the run.
RESUME_MAY_CHANGE = {
    "epochs", "device", "data_dir", "checkpoint_dir", "save_every", "compile", "precision", "sync_batchnorm",
    "tensorboard", "json_output", "resume",
}  # fmt: skip


def _parse_epochs(text: str, flag: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(f"{flag} takes comma-separated whole numbers such as 0,10,20, not '{text}'") from None
    if any(value < 0 for value in values):
        raise typer.BadParameter(f"{flag} takes epochs of 0 or more, not '{text}'")
    return values


def _config_parameters(config_class) -> list[inspect.Parameter]:
    """One typer option per config field, with its help text, limits and choices."""
    hints = get_type_hints(config_class)
    parameters = []
    for spec in fields(config_class):
        if spec.metadata.get("from_data"):  # set by training from the dataset, not an option
            continue
        assert spec.name not in COMMON_TRAIN_OPTIONS, f"config field {spec.name} clashes with a common option"
        kind, meta, flag = hints[spec.name], spec.metadata, "--" + spec.name.replace("_", "-")
        default = spec.default
        if meta.get("choices"):
            kind = Enum(spec.name, {choice: choice for choice in meta["choices"]}, type=str)
            option = typer.Option(flag, help=meta["help"])
            default = kind(default)
        elif kind == tuple[int, ...]:
            kind, option = str, typer.Option(flag, help=meta["help"] + " Comma-separated.")
            default = ",".join(str(value) for value in default)
        elif kind is bool:
            option = typer.Option(f"{flag}/--no-{flag[2:]}", help=meta["help"], metavar="")
        else:
            option = typer.Option(flag, help=meta["help"], min=meta.get("min"), max=meta.get("max"))
        parameters.append(
            inspect.Parameter(spec.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[kind, option])
        )
    return parameters


def _common_train_parameters() -> list[inspect.Parameter]:
    options = {
        "seed": (SeedOpt, 0),
        "device": (DeviceOpt, "auto"),
        "out": (
            Annotated[Optional[Path], typer.Option("--out", help="Run folder (default runs/MODEL/DATE-TIME).")],
            None,
        ),
        "dataset": (
            Annotated[
                Optional[str],
                typer.Option("--dataset", help=f"{DATASET_HELP}; default mnist, falling back to the bundled mnist-mini.",
                             show_default=False),
            ],
            None,
        ),
        "val_size": (
            Annotated[
                Optional[int],
                typer.Option("--val-size", min=1, help="Images at the end of a named dataset's training file held out "
                             "for validation (default: a sixth, 10,000 of MNIST's 60,000; the IWAE paper's protocol "
                             "holds out 400). Recorded with the run: --resume and dgm eval split the same way.",
                             show_default=False),
            ],
            None,
        ),
        "image_fit": (
            Annotated[
                ImageFit,
                typer.Option("--image-fit", help="An image folder's images that are not 28x28: keep the centred "
                             "largest square (crop) or pad with black to a square (pad), then a Lanczos resize."),
            ],
            ImageFit.crop,
        ),
        "skip_bad_images": (
            Annotated[
                bool,
                typer.Option("--skip-bad-images", help="An image folder's files that cannot be read as images are "
                             "left out and counted (default: stop at them).", metavar=""),
            ],
            False,
        ),
        "data_dir": (DataDirOpt, None),
        "checkpoint_dir": (
            Annotated[
                Optional[Path],
                typer.Option("--checkpoint-dir", help="Where the final model is copied as MODEL.safetensors."),
            ],
            Path("checkpoints"),
        ),
        "resume": (
            Annotated[
                Optional[str],
                typer.Option(
                    "--resume",
                    help="Continue the run in this folder from its state.safetensors ('last': the newest run of "
                    "this model under runs/); its own settings are used, --epochs may extend it.",
                ),
            ],
            None,
        ),
        "init_from": (
            Annotated[
                Optional[Path],
                typer.Option(
                    "--init-from",
                    help="Start a new run from this checkpoint's weights (and weight average) instead of random ones: "
                    "fine-tuning, or more epochs for a model whose run folder is gone. Options left out are the "
                    "checkpoint's own; the optimizer and the learning-rate schedule start afresh.",
                    show_default=False,
                ),
            ],
            None,
        ),
        "save_every": (
            Annotated[
                int,
                typer.Option(
                    "--save-every", min=1, max=100_000, help="Epochs between checkpoints (always at the end and on Ctrl-C)."
                ),
            ],
            1,
        ),
        "compile": (
            Annotated[bool, typer.Option("--compile", help="torch.compile the training step (see docs/performance.md).", metavar="")],
            False,
        ),
        "precision": (
            Annotated[
                Precision,
                typer.Option("--precision", help="fp32; tf32 matmuls (CUDA); bf16 in training steps (matmuls on the CPU, autocast on a GPU)."),
            ],
            Precision.fp32,
        ),
        "sync_batchnorm": (
            Annotated[
                bool,
                typer.Option(
                    "--sync-batchnorm",
                    help="Under torchrun on GPUs: batch normalisation over the global batch (SyncBatchNorm) "
                    "instead of each process's shard.",
                    metavar="",
                ),
            ],
            False,
        ),
        "tensorboard": (
            Annotated[
                bool,
                typer.Option(
                    "--tensorboard",
                    help="Also write TensorBoard events into the run folder (tensorboard --logdir runs); "
                    'needs pip install -e ".[tensorboard]".',
                    metavar="",
                ),
            ],
            False,
        ),
        "json_output": (JsonOpt, False),
    }
    parameters = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        for name, (annotation, default) in options.items()
    ]
    return parameters + [inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)]


def _resumed_run(model_name: str, values: dict, common: dict):
    """The run `--resume` names, reopened by the library, after checking that only what may change was given."""
    from dgm_cli.run_folder import find_run, reopen_run

    ctx = common["ctx"]
    given = [name for name in [*values, *COMMON_TRAIN_OPTIONS] if name != "ctx" and ctx.get_parameter_source(name).name != "DEFAULT"]
    refused = [f"--{name.replace('_', '-')}" for name in given if name not in RESUME_MAY_CHANGE]
    if refused:
        may = ", ".join(f"--{name.replace('_', '-')}" for name in sorted(RESUME_MAY_CHANGE - {"json_output", "resume"}))
        raise DgmError(f"--resume continues a run with its own settings; leave out {', '.join(refused)} (only {may} may be given)")
    epochs = values["epochs"] if "epochs" in given else None
    resumed = reopen_run(find_run(common["resume"], model_name), model_name, epochs=epochs, data_dir=common["data_dir"])
    # Where and how it runs stays as recorded unless given now.
    if "checkpoint_dir" not in given:
        common["checkpoint_dir"] = resumed.checkpoint_dir
    if "precision" not in given:
        common["precision"] = Precision(resumed.precision)
    if "tensorboard" not in given:
        common["tensorboard"] = resumed.tensorboard
    if "save_every" not in given:
        common["save_every"] = resumed.save_every
    return resumed


def _config_from_options(spec, values: dict, ctx, start=None):
    """The config of a new run: the defaults, then the config of the --init-from checkpoint `start` (its
    CheckpointInfo), then the fields of a --preset, then the options given explicitly."""
    from dgm_cli.registry import preset_overrides

    given = {name for name in values if ctx.get_parameter_source(name).name != "DEFAULT"}
    if start is not None:  # its fields that are options (not those the data set, such as the classes)
        values = {**values, **{k: v for k, v in config_tools.to_dict(start.config).items() if k in values and k not in given}}
    # A checkpoint's recorded preset is already in its fields; a preset named now applies over them.
    from_preset = preset_overrides(spec, values.get("preset")) if start is None or "preset" in given else {}
    config = config_tools.from_dict(spec.config_class, {**values, **{k: v for k, v in from_preset.items() if k not in given}})
    inapplicable = getattr(config, "inapplicable_fields", dict)()
    refused = sorted(given & set(inapplicable))
    if refused:
        option = lambda name: "--" + name.replace("_", "-")  # noqa: E731
        reasons = "; ".join(f"{option(name)} belongs to {inapplicable[name]}" for name in refused)
        raise DgmError(f"{', '.join(map(option, refused))} would change nothing in this configuration ({reasons}); "
                       f"leave {'them' if len(refused) > 1 else 'it'} out or choose the setting it belongs to")  # fmt: skip
    return config


def _run_training(model_name: str, values: dict, common: dict) -> None:
    """One process's training; under torchrun every process runs this, joined by distributed.start."""
    from dgm_cli import distributed

    parallel, device_name = distributed.start(common["device"])
    finished = False
    try:
        _train_in_process(model_name, values, common, parallel, device_name)
        finished = True
    finally:
        distributed.stop(finished=finished)


def _train_in_process(model_name: str, values: dict, common: dict, parallel, device_name: str) -> None:
    from dgm_cli.data import load_dataset
    from dgm_cli.device import resolve_device
    from dgm_cli.progress import quiet_console
    from dgm_cli.run_folder import RunFolder, default_run_path
    from dgm_cli.train import RunSettings, train

    spec = get_spec(model_name)
    device = resolve_device(device_name)
    if common["tensorboard"]:  # before any data are read or anything is printed
        from dgm_cli.tensorboard_log import require_tensorboard

        require_tensorboard()
    state, seed = None, common["seed"]
    if common["resume"] is not None:
        resumed = _resumed_run(model_name, values, common)
        out, state, config, seed, dataset = resumed.folder, resumed.state, resumed.config, resumed.seed, resumed.dataset
    else:
        start = None
        if common["init_from"] is not None:
            from dgm_cli.checkpoint import read_header

            start = read_header(common["init_from"], expected_model=model_name)
        config = _config_from_options(spec, values, common["ctx"], start)
        if start is not None:
            from dgm_cli.checkpoint import check_initial_weights

            check_initial_weights(start, config)
        out = common["out"] or default_run_path(model_name)
        RunFolder(out, writes=parallel.is_main).refuse_existing()  # before the data are read
        dataset = _read_data(lambda progress: load_dataset(
            common["dataset"], common["data_dir"], fit=common["image_fit"].value, skip_bad=common["skip_bad_images"],
            progress=progress, val_size=common["val_size"]), console=stderr_console() if parallel.is_main else quiet_console())  # fmt: skip
    console = stderr_console() if parallel.is_main else quiet_console()
    if dataset.fallback_reason:
        # Messages and paths are printed without rich markup: "[Errno -2]" in a reason is not a style.
        console.print(f"warning: {dataset.fallback_reason}", markup=False, soft_wrap=True, style="yellow")
        console.print(
            f"warning: training on the bundled mnist-mini subset instead "
            f"({len(dataset.train):,} train / {len(dataset.val):,} val / {len(dataset.test):,} test images); "
            "its numbers are not comparable with full-MNIST results.",
            markup=False,
            style="yellow",
        )
    resumed_at = f"; resuming after epoch {state.epoch}" if state is not None else ""
    if common["init_from"] is not None and state is None:
        resumed_at = f"; starting from the weights of {common['init_from']}"
    if state is not None and state.position is not None:
        resumed_at = f"; resuming epoch {state.epoch + 1} at batch {state.position.next_batch}"
    processes = f" x {parallel.world_size} processes (torchrun)" if parallel.enabled else ""
    console.print(
        f"training {model_name} on {dataset.name} ({len(dataset.train):,} images) on {device}{processes}; "
        f"run folder {out}{resumed_at}",
        markup=False,
    )
    settings = RunSettings(
        out_dir=out,
        seed=seed,
        device=device,
        checkpoint_dir=common["checkpoint_dir"],
        save_every=common["save_every"],
        compile=common["compile"],
        precision=common["precision"].value,
        parallel=parallel,
        sync_batchnorm=common["sync_batchnorm"],
        tensorboard=common["tensorboard"],
        init_from=common["init_from"],
    )
    try:
        history = train(model_name, config, dataset, settings, console, resume=state)
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once, without saving; the last saved state is kept
        hint = RunFolder(out, writes=False).resume_hint(model_name)
        if parallel.is_main and hint is not None:
            console.print(f"interrupted at once; the last saved state is kept: continue with: {hint}", markup=False,
                          soft_wrap=True)  # fmt: skip
        raise
    final = history[-1]
    copied = f" and {common['checkpoint_dir'] / (model_name + '.safetensors')}" if common["checkpoint_dir"] else ""
    fallback = " (trained on the bundled mnist-mini subset: not comparable with full-MNIST results)"
    console.print(f"done: {out / 'last.safetensors'}{copied}{fallback if dataset.fallback_reason else ''}", markup=False,
                  soft_wrap=True)
    if common["json_output"] and parallel.is_main:
        _print_json({"model": model_name, "run": str(out), "data": dataset.describe(), "final": final})


def _make_train_command(model_name: str):
    spec = get_spec(model_name)
    hints = get_type_hints(spec.config_class)

    def command(**kwargs):
        common = {name: kwargs.pop(name) for name in COMMON_TRAIN_OPTIONS}
        values = {}
        for name, value in kwargs.items():
            if isinstance(value, Enum):
                value = value.value
            elif hints[name] == tuple[int, ...]:
                value = _parse_epochs(value, "--" + name.replace("_", "-"))
            values[name] = value
        _run_training(model_name, values, common)

    parameters = _config_parameters(spec.config_class) + _common_train_parameters()
    command.__signature__ = inspect.Signature(parameters)
    command.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
    command.__name__ = model_name
    command.__doc__ = f"{spec.description}."
    return user_errors(command)


for _name in list_models():
    train_app.command(name=_name)(_make_train_command(_name))


# ---------------------------------------------------------------- sampling and figures


@app.command()
@user_errors
def sample(
    model: ModelArg,
    checkpoint: CheckpointArg = None,
    n: Annotated[int, typer.Option("-n", "--n", min=1, max=10_000, help="Number of images.")] = 64,
    out: Annotated[Path, typer.Option("--out", help="Output image (PNG).")] = Path("samples.png"),
    nrow: Annotated[Optional[int], typer.Option("--nrow", min=1, max=10_000, help="Images per row (left out: a square grid, ceil(sqrt(n)); at most n).", show_default=False)] = None,
    binary: Annotated[bool, typer.Option("--binary", help="Draw binary images from the pixel probabilities.", metavar="")] = False,
    raw: RawOpt = False,
    temperature: Annotated[
        float,
        typer.Option(
            "--temperature", min=0.0, max=10.0, help="Standard deviation of the latent draws (below 1: cleaner, less varied)."
        ),
    ] = 1.0,
    label: Annotated[
        Optional[int],
        typer.Option("--label", min=0, help="Conditional models: draw only this class (0..9 for MNIST); left out, one row per "
                     "class with ceil(n / classes) images each.", show_default=False),
    ] = None,
    sampler: SamplerOpt = None,
    steps: StepsOpt = None,
    eta: EtaOpt = None,
    guidance: GuidanceOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
) -> None:
    """Draw samples from a trained model into one image grid."""
    from dgm_cli.plots import save_image_grid
    from dgm_cli.sampling import class_grid, sample_images

    net, info = _load(model, checkpoint, device)
    chosen_sampler = _configure_sampler(net, sampler, steps, guidance, eta)
    labels, described = (torch.full((n,), label), f" of class {label}") if label is not None else (None, "")
    if labels is None and net.classes:  # a conditional model: one row per class
        labels, per_class = class_grid(net, n)
        n, nrow, described = len(labels), nrow or per_class, f", one row per class ({per_class} each)"
    with _denoising_progress(net, n):
        images = sample_images(net, n, seed=seed, binary=binary, raw=raw, temperature=temperature, labels=labels)
    save_image_grid(images, out, nrow=nrow)
    how = _sampler_words(chosen_sampler)
    stderr_console().print(f"wrote {n} samples{described} (temperature {temperature:g}{how}) from {info.path} to {out}",
                           markup=False)  # fmt: skip


@app.command()
@user_errors
def manifold(
    model: ModelArg,
    checkpoint: CheckpointArg = None,
    grid: Annotated[int, typer.Option("--grid", min=2, max=100, help="Images per side.")] = 20,
    edge: Annotated[
        float,
        typer.Option("--edge", min=0.001, max=0.499, help="Outermost prior quantile; points span edge..1-edge."),
    ] = 0.05,
    out: Annotated[Path, typer.Option("--out", help="Output image (PNG).")] = Path("manifold.png"),
    label: LabelOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Draw the learned manifold of a model with a 2-D latent space (of one class, for a conditional model)."""
    from dgm_cli.plots import save_image_grid
    from dgm_cli.sampling import manifold_images

    net, info = _load(model, checkpoint, device)
    save_image_grid(manifold_images(net, grid, edge=edge, label=label), out, nrow=grid)
    of_class = "" if label is None else f" (class {label})"
    stderr_console().print(f"wrote the {grid}x{grid} manifold{of_class} of {info.path} to {out}", markup=False)


def _parse_digit_pair(text: str) -> tuple[int, int]:
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != 2 or not all(part.isdigit() and len(part) == 1 for part in parts):
        raise typer.BadParameter(f"--classes takes two digits such as 3,8, not '{text}'")
    return int(parts[0]), int(parts[1])


def _method_enum():
    from dgm_cli.interpolate import METHODS

    return Enum("Method", {name: name for name in METHODS}, type=str)


Method = _method_enum()


@app.command()
@user_errors
def interpolate(
    model: ModelArg,
    checkpoint: CheckpointArg = None,
    steps: Annotated[int, typer.Option("--steps", min=0, max=100, help="Points between the two endpoints.")] = 7,
    method: Annotated[Method, typer.Option("--method", help="Straight line, or along the sphere (keeps the norm).")] = Method.slerp,
    rows: Annotated[int, typer.Option("--rows", min=1, max=100, help="Independent pairs of endpoints.")] = 1,
    seed_a: Annotated[
        Optional[int], typer.Option("--seed-a", min=0, help="Seed of the first endpoint's draw (row r uses seed+r); left out: "
                     "drawn from --seed's stream.", show_default=False)
    ] = None,
    seed_b: Annotated[Optional[int], typer.Option("--seed-b", min=0, help="Seed of the second endpoint's draw (row r uses seed+r); left out: "
                     "drawn from --seed's stream.", show_default=False)] = None,
    classes: Annotated[
        Optional[str],
        typer.Option("--classes", help="Two digits, e.g. 3,8: endpoints the classifier of the model's data (shipped "
                     "for MNIST and Fashion-MNIST, else --classifier) assigns to them."),
    ] = None,
    classifier: Annotated[
        Optional[Path],
        typer.Option("--classifier", help="With --classes: a classifier trained on the model's data (dgm train "
                     "classifier); default: the shipped one that fits it.", show_default=False),
    ] = None,
    from_images: Annotated[
        bool, typer.Option("--from-images", help="Walk between the posterior means of two real images.", metavar="")
    ] = False,
    image_a: Annotated[
        Optional[int], typer.Option("--image-a", min=0, help="With --from-images: index of the first image (row r uses index+r); "
                     "left out: a random image per row (--seed).", show_default=False)
    ] = None,
    image_b: Annotated[
        Optional[int], typer.Option("--image-b", min=0, help="With --from-images: index of the second image (row r uses index+r); "
                     "left out: a random image per row (--seed).", show_default=False)
    ] = None,
    split: Annotated[SplitName, typer.Option("--split", help="With --from-images: which split.")] = SplitName.test,
    label: Annotated[
        Optional[int],
        typer.Option("--label", min=0, help="Conditional models: the class held along every walk (0..9 for MNIST); left out, "
                     "row r walks as class r mod 10 (with --from-images: as its first image's class).",
                     show_default=False),
    ] = None,
    across_classes: Annotated[
        bool,
        typer.Option("--across-classes", help="Conditional models: hold each row's latent (a prior draw, or with "
                     "--from-images the first image's) and change the label through every class.", metavar=""),
    ] = False,
    dataset: CheckpointDatasetOpt = None,
    data_dir: DataDirOpt = None,
    out: Annotated[Path, typer.Option("--out", help="Output image (PNG).")] = Path("interpolation.png"),
    denoising_steps: Annotated[
        Optional[int],
        typer.Option("--denoising-steps", min=1, max=10_000, help="Diffusion models: DDIM steps that decode (and with "
                     "--from-images encode) each latent (default: the model's --sample-steps).", show_default=False),
    ] = None,
    guidance: GuidanceOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
) -> None:
    """Decode a walk through the latent space between two endpoints, one row per pair (a conditional model:
    walk with the label held, or hold the latent and change the label)."""
    from dgm_cli.interpolate import (
        class_endpoints,
        class_sweep_images,
        image_endpoints,
        interpolation_images,
        prior_endpoints,
    )
    from dgm_cli.models.conditioning import check_labels
    from dgm_cli.plots import save_image_grid

    digits = _parse_digit_pair(classes) if classes is not None else None
    if from_images and digits is not None:
        raise typer.BadParameter("choose endpoints by --classes or by --from-images, not both")
    if across_classes and label is not None:
        raise typer.BadParameter("--across-classes shows every class; leave out --label")
    net, info = _load(model, checkpoint, device)
    if "latent" not in net.capabilities:
        raise DgmError(f"the {model.value} has no latent space to interpolate in")
    _configure_sampler(net, None, denoising_steps, guidance)
    if label is not None:
        check_labels(torch.tensor([label]), net.classes)
    if net.classes and digits is not None:
        raise DgmError("a conditional model draws a class directly: use --label or --across-classes instead of --classes")
    row_labels = None
    if from_images:
        chosen = _checkpoint_dataset(info, dataset, data_dir).split(split.value)
        starts, ends, pairs, pair_labels = image_endpoints(net, chosen.images, rows, seed=seed, index_a=image_a,
                                                           index_b=image_b, labels=chosen.labels)  # fmt: skip
        described = f"{split.value} images " + ", ".join(f"{a}->{b}" for a, b in pairs)
        if pair_labels is not None:
            row_labels = pair_labels[:, 0]
    elif digits is not None:
        from dgm_cli.feature_network import feature_network, missing_note

        features = feature_network(info.data, net.device, classifier=classifier)
        if features is None:
            raise DgmError(missing_note(info.data, "--classes").replace(" skipped:", " needs a classifier, and"))
        if max(digits) >= features.classes:
            raise DgmError(f"--classes {classes}: the classifier knows classes 0..{features.classes - 1}")
        starts, ends = class_endpoints(net, features.classifier, digits, rows, seed=seed)
        described = f"prior draws {features.words()} reads as {digits[0]} and {digits[1]}"
    else:
        if image_a is not None or image_b is not None:
            raise DgmError("--image-a and --image-b choose real images; add --from-images")
        starts, ends = prior_endpoints(net.latent_dim, rows, seed=seed, seed_a=seed_a, seed_b=seed_b)
        described = "prior draws"
    console = stderr_console()
    if across_classes:
        with _denoising_progress(net, rows * net.classes):
            sweep = class_sweep_images(net, starts)
        save_image_grid(sweep, out, nrow=net.classes)
        held = f"of {split.value} images " + ", ".join(str(a) for a, _ in pairs) if from_images else "a prior draw"
        console.print(f"wrote {rows} row(s), each one latent ({held}) drawn as each of {net.classes} classes, to {out}",
                      markup=False)  # fmt: skip
        return
    if net.classes:
        if label is not None:
            row_labels = torch.full((rows,), label)
        elif row_labels is None:
            row_labels = torch.arange(rows) % net.classes
        described += ", as class " + ",".join(map(str, row_labels.tolist()))
    with _denoising_progress(net, rows * (steps + 2)):
        grid = interpolation_images(net, starts, ends, steps=steps, method=method.value, row_labels=row_labels)
    save_image_grid(grid, out, nrow=steps + 2)
    console.print(
        f"wrote {rows} {method.value} interpolation(s) of {steps + 2} images between {described} to {out}",
        markup=False,
    )


# ---------------------------------------------------------------- evaluation and inspection


@app.command("eval")
@user_errors
def evaluate(
    model: ModelArg,
    checkpoint: CheckpointArg = None,
    split: Annotated[SplitName, typer.Option("--split", help="Which split to evaluate against.")] = SplitName.test,
    iw_samples: Annotated[
        int,
        typer.Option("--iw-samples", min=0, max=100_000, help="Posterior draws per image (importance sampling); 0 skips likelihoods."),
    ] = 1000,
    mc_samples: Annotated[
        int, typer.Option("--mc-samples", min=0, max=100_000, help="Prior draws per image (naive Monte-Carlo); 0 skips.")
    ] = 1000,
    dequantization_draws: Annotated[
        Optional[int],
        typer.Option(
            "--dequantization-draws",
            min=0,
            max=10_000,
            help="Flows: draws per image from the model's dequantization, uniform or learned (more than 1 adds the "
            "tighter importance-weighted bound); 0 skips likelihoods. Default: the published protocol of the "
            "checkpoint's preset (8 draws), else 1.",
            show_default=False,
        ),
    ] = None,
    samples: Annotated[
        int, typer.Option("--samples", min=0, max=100_000, help="Generated images for the sample-quality metrics; 0 skips.")
    ] = 10_000,
    raw: RawOpt = False,
    temperature: Annotated[
        float,
        typer.Option("--temperature", min=0.0, max=10.0, help="Standard deviation of the latent draws of the samples "
                     "(below 1: cleaner, less varied); recorded in the report."),
    ] = 1.0,
    limit: Annotated[
        Optional[int], typer.Option("--limit", min=1, help="Use only the first N images of the split (likelihoods, accuracy); left out: all of it.")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=10_000, help="Images per batch.")] = 100,
    dataset: CheckpointDatasetOpt = None,
    data_dir: DataDirOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    json_output: JsonOpt = False,
    result: Annotated[
        Optional[Path],
        typer.Option("--result", help="Also write the JSON report to this file (dgm presets reads CKPT.eval.json)."),
    ] = None,
    bound_timesteps: Annotated[
        int,
        typer.Option("--bound-timesteps", min=0, max=100_000, help="Diffusion models: terms of the variational bound "
                     "evaluated per image: t = 1 and one drawn t in each of K - 1 equal strata of the rest (unbiased); "
                     "the model's T or more evaluates all T terms; 0 skips the bound."),
    ] = 50,
    sampler: SamplerOpt = None,
    steps: StepsOpt = None,
    eta: EtaOpt = None,
    guidance: GuidanceOpt = None,
    classifier: Annotated[
        Optional[Path],
        typer.Option("--classifier", help="The classifier whose features measure the samples (dgm train classifier on "
                     "the same data); default: the shipped one that fits the data (MNIST, Fashion-MNIST), else none "
                     "and the sample-quality metrics are skipped.", show_default=False),
    ] = None,
) -> None:
    """Evaluate a checkpoint: likelihoods (VAE: ELBO, importance-weighted, prior Monte-Carlo; flow: exact density
    at dequantized images; nats and bits/dim),
    sample quality (FID, KID, precision/recall, Inception Score, class coverage) beside the real-data floor,
    and a classifier's accuracy."""
    from dgm_cli import reports
    from dgm_cli.evaluate import classification, dequantized_log_likelihood, evaluate_images, timestep_bound
    from dgm_cli.feature_network import feature_network, missing_note
    from dgm_cli.metrics import sample_quality
    from dgm_cli.sampling import sample_images

    net, info = _load(model, checkpoint, device)
    chosen_sampler = _configure_sampler(net, sampler, steps, guidance, eta)
    data = _checkpoint_dataset(info, dataset, data_dir)
    chosen = data.split(split.value)
    images, labels = chosen.images[:limit], chosen.labels[:limit]
    report = {"model": model.value, "checkpoint": str(info.path), "dataset": data.name, "split": split.value, "seed": seed}
    console, results = stderr_console(), result_console(json_output)
    if "classifier" in net.capabilities:
        report["classification"] = classification(net, images, labels)
        reports.print_classification(results, report)
    # A latent-variable model's estimators, or a flow's exact density at dequantized images.
    estimator = None
    if "latent_likelihood" in net.capabilities and iw_samples > 0:
        estimator = functools.partial(evaluate_images, iw_samples=iw_samples, mc_samples=mc_samples)
    elif "exact_likelihood" in net.capabilities:
        if dequantization_draws is None:
            preset = preset_of(get_spec(model.value), info.config)
            dequantization_draws = preset.protocol["samples"] if preset is not None else 1
        if dequantization_draws > 0:
            estimator = functools.partial(dequantized_log_likelihood, draws=dequantization_draws)
    elif "variational_bound" in net.capabilities and bound_timesteps > 0:
        estimator = functools.partial(timestep_bound, timesteps=bound_timesteps)
    # A conditional model is scored at the images' own labels: log p(x|y).
    given = {"labels": labels} if net.classes else {}
    if estimator is not None:
        with make_progress(console) as progress:
            task = progress.add_task(f"log-likelihood, {split.value} images", total=len(images))
            estimates = estimator(
                net, images, seed=seed, batch_size=batch_size, on_batch=lambda count: progress.advance(task, count),
                **given,
            )  # fmt: skip
        report["likelihood"] = {"images": len(images), "conditional": bool(net.classes),
                                **{name: e.summary() for name, e in estimates.items()}}  # fmt: skip
        from dgm_cli.presets import comparison

        published = comparison(get_spec(model.value), info, report, split_size=len(chosen))
        if published is not None:
            report["published"] = published
        reports.print_likelihood(results, report)
        if net.classes:
            from dgm_cli.conditional import class_mixture, label_log_prior

            with make_progress(console) as progress:
                task = progress.add_task(f"log p(x|y) for each of {net.classes} classes", total=len(images) * net.classes)
                report["class_mixture"] = class_mixture(
                    estimator, net, images, labels, log_prior=label_log_prior(data.split("train").labels, net.classes),
                    seed=seed, batch_size=batch_size, on_batch=lambda count: progress.advance(task, count),
                )  # fmt: skip
            reports.print_class_mixture(results, report)
    features = None
    if "sample" in net.capabilities and samples > 0:
        features = feature_network(data.describe(), net.device, classifier=classifier)
        if features is None:
            report["sample_quality_skipped"] = missing_note(data.describe(), "sample quality")
            console.print(report["sample_quality_skipped"], markup=False, soft_wrap=True, style="yellow")
        else:
            report["feature_network"] = features.describe()
    if features is not None:
        floor_split = "test" if split.value == "val" else "val"
        sample_labels = None
        if net.classes:  # an equal number of every class, so that each class's metrics rest on as many samples
            from dgm_cli.models.conditioning import class_rows

            sample_labels = class_rows(net.classes, max(1, samples // net.classes))
            samples = len(sample_labels)
        console.print(f"sample quality: drawing {samples:,} images and embedding them with {features.words()}",
                      markup=False, soft_wrap=True)  # fmt: skip
        held_out = data.split(floor_split)
        with _denoising_progress(net, samples):
            drawn = sample_images(net, samples, seed=seed, raw=raw, labels=sample_labels, temperature=temperature)
        report["sample_quality"] = {
            "floor_split": floor_split,
            "temperature": temperature,
            **({} if chosen_sampler is None else {"sampler": chosen_sampler}),
            "weights": "live" if raw or not net.keeps_average else "moving average",
            **sample_quality(features.classifier, drawn, reference=chosen.images.float() / 255,
                             held_out=held_out.images.float() / 255),
        }  # fmt: skip
        reports.print_sample_quality(results, report)
        if net.classes:
            from dgm_cli.conditional import conditional_quality

            console.print(f"conditional accuracy and per-class quality: {samples // net.classes:,} samples of each class")
            report["conditional_quality"] = conditional_quality(
                features.classifier, drawn, sample_labels, reference=chosen.images.float() / 255, reference_labels=chosen.labels,
                held_out=held_out.images.float() / 255, held_out_labels=held_out.labels,
            )  # fmt: skip
            reports.print_conditional_quality(results, report)
    if not {"classification", "likelihood", "sample_quality", "sample_quality_skipped"} & set(report):
        raise DgmError(f"nothing to evaluate for the {model.value} with these options")
    if result is not None:
        from dgm_cli.atomic import write_text

        write_text(result, json.dumps(report, indent=2))
    if json_output:
        _print_json(report)


def _as_option(field: tuple) -> str:
    """A config field and its value as the option that sets it: --batch-size 20, --no-flag, --sample-epochs 0,10."""
    name, value = field
    flag = name.replace("_", "-")
    if isinstance(value, bool):
        return f"--{flag}" if value else f"--no-{flag}"
    if isinstance(value, (tuple, list)):
        value = ",".join(str(part) for part in value)
    return f"--{flag} {value}"


@app.command()
@user_errors
def presets(
    model: Annotated[Optional[ModelName], typer.Argument(help="Only this model's presets.", show_default=False)] = None,
    checkpoint_dir: Annotated[
        Path, typer.Option("--checkpoint-dir", help="Where to look for MODEL-PRESET.safetensors and its .eval.json.")
    ] = Path("checkpoints"),
    json_output: JsonOpt = False,
) -> None:
    """List the published configurations `dgm train MODEL --preset NAME` trains, with the published number and,
    where a checkpoint of the preset has been evaluated (dgm eval ... --result CKPT.eval.json), dgm's own;
    variants (MODEL-PRESET-WORD.safetensors, the preset with options changed) follow with their changes."""
    from dgm_cli.presets import preset_table

    rows = preset_table([model.value] if model else list_models(), checkpoint_dir)
    if json_output:
        _print_json({"presets": rows})
        return
    if not rows:
        stderr_console().print("no presets" + (f" for the {model.value}" if model else ""), markup=False)
        return
    from dgm_cli.reports import published_digits

    def number(value, row):
        return "-" if value is None else f"{value:.{published_digits(row['metric'])}f}"

    def configuration(row):
        changed = " ".join(map(_as_option, row["changes"].items()))
        if row["variant"] is None:  # the preset's own checkpoint, trained otherwise than the preset now is, says how
            return row["description"] + (f"; this checkpoint: {changed}" if changed else "")
        return f"variant {row['variant']}: " + (changed or "the preset's configuration")

    table = [[row["model"], row["name"], number(row["published"], row), number(row["dgm"], row),
              "-" if row["dgm"] is None else f"± {number(row['dgm_standard_error'], row)}", configuration(row)]
             for row in rows]  # fmt: skip
    typer.echo(_format_table(["model", "preset", "published", "dgm", "s.e.", "configuration"], table))
    for source in sorted({f"published: {row['metric']}; {row['reference']}" for row in rows}):
        typer.echo(source)


@app.command()
@user_errors
def info(
    checkpoint: Annotated[
        Path, typer.Argument(help="A .safetensors checkpoint, or a run folder (its best.safetensors, else last).")
    ],
    json_output: JsonOpt = False,
) -> None:
    """Show a checkpoint's metadata: model, config, data and training facts."""
    from dgm_cli.checkpoint import check_checkpoint

    details = check_checkpoint(_checkpoint_file(checkpoint)).as_dict()
    if json_output:
        _print_json(details)
        return
    console = result_console(json_output=False)
    console.print(
        f"{details['path']}: {details['model']} model, {details['parameters']:,} parameters, dgm {details['version']}",
        markup=False,
    )
    for key in ("config", "data", "train"):
        console.print(f"{key}: {json.dumps(details[key], sort_keys=True)}", soft_wrap=True, markup=False)
    if details["data"].get("fallback"):
        stderr_console().print(f"warning: trained on the bundled mnist-mini subset ({details['data'].get('fallback_reason')}); "
                               "its numbers are not comparable with full-MNIST results", markup=False, style="yellow")  # fmt: skip


def _format_table(header: list[str], rows: list[list[str]]) -> str:
    """Plain columns, two spaces apart, that survive a pipe (grep, sort, less) where a drawn table would not."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows])


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


@app.command()
@user_errors
def runs(
    folder: Annotated[Path, typer.Argument(help="Where to look for run folders, at any depth.")] = Path("runs"),
    model: Annotated[Optional[ModelName], typer.Option("--model", help="Only the runs of this model.")] = None,
    json_output: JsonOpt = False,
) -> None:
    """List training runs: model, data, epochs, status, best and last validation metric, time, folder.

    train time adds up the epochs' training; wall is the whole run's wall-clock time (validation, figures and
    checkpoints included) as of its last save."""
    from dgm_cli.run_status import list_runs

    summaries = list_runs(folder, model=model.value if model else None)
    if json_output:
        _print_json({"folder": str(folder), "runs": [summary.as_dict() for summary in summaries]})
        return
    if not summaries:
        stderr_console().print(f"no training runs under {folder}", markup=False)
        return
    number = lambda value: "-" if value is None else f"{value:.4f}"  # noqa: E731
    rows = [
        [s.model, s.dataset, f"{s.epochs_done}/{s.epochs_planned if s.epochs_planned is not None else '?'}",
         f"{s.status} {s.detail}", (s.metric or "-").removeprefix("val_"), number(s.best), number(s.last),
         _duration(s.train_seconds), "-" if s.wall_seconds is None else _duration(s.wall_seconds), s.path]
        for s in summaries
    ]  # fmt: skip
    header = ["model", "data", "epochs", "status", "metric", "best val", "last val", "train time", "wall", "folder"]
    typer.echo(_format_table(header, rows))


@app.command()
@user_errors
def reproduce(
    out: Annotated[Path, typer.Option("--out", help="Where the runs, results and README.md go.")] = Path("docs/report"),
    quick: Annotated[
        bool, typer.Option("--quick", help="A few epochs on the bundled mnist-mini subset, for CI and demos.", metavar="")
    ] = False,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    json_output: JsonOpt = False,
) -> None:
    """Run the seed report's experiments (VAE zdim 20 and 2, GAN, both flows), evaluate them and write a report.

    Interrupted? Run the same command again: finished steps are kept and an interrupted training resumes."""
    from dgm_cli.data import load_dataset
    from dgm_cli.device import resolve_device
    from dgm_cli.reproduce import EXPERIMENTS
    from dgm_cli.reproduce import reproduce as run_all

    dataset = load_dataset("mnist-mini" if quick else "mnist", data_dir)
    console = stderr_console()
    console.print(f"reproducing {len(EXPERIMENTS)} experiments on {dataset.name} into {out}", markup=False)
    summary = run_all(out, dataset, quick=quick, device=resolve_device(device), console=console)
    console.print(f"done: {summary['report']}", markup=False)
    if json_output:
        _print_json(summary)


@app.command()
@user_errors
def models(json_output: JsonOpt = False) -> None:
    """List the registered models and what each can do."""
    entries = []
    for name in list_models():
        spec = get_spec(name)
        entries.append(
            {
                "name": name,
                "description": spec.description,
                "capabilities": sorted(spec.module_class.capabilities),
                "config": config_tools.defaults(spec.config_class),
            }
        )
    if json_output:
        _print_json({"models": entries})
        return
    console = result_console(json_output=False)
    for entry in entries:
        console.print(f"{entry['name']:<8} {entry['description']}  [{', '.join(entry['capabilities'])}]", markup=False)


def main() -> None:
    flush_subnormals()  # before any tensor operation starts the intra-op threads, which copy the flag
    app()


if __name__ == "__main__":
    sys.exit(main())
