"""The `dgm` command line: parse options, call the library, print.

No model logic lives here and no command branches on a model's name: model
names come from the registry, and `dgm train MODEL` options are generated from
each model's config dataclass. Human output and progress go to stderr;
`--json` prints exactly one JSON object on stdout. A DgmError becomes a
one-line message and exit status 1 (in `user_errors`, the one place that does
this); usage errors exit 2; tracebacks appear only with --debug.
"""

import functools
import inspect
import json
import os
import re
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional, get_type_hints

import torch
import typer

from dgm_cli import __version__
from dgm_cli.cli_options import (
    COMMON_TRAIN_OPTIONS,
    DATASET_HELP,
    CheckpointArg,
    CheckpointDatasetOpt,
    ClassifierOpt,
    DataDirOpt,
    DeviceOpt,
    EtaOpt,
    GuidanceOpt,
    JsonOpt,
    LabelOpt,
    Method,
    ModelArg,
    ModelName,
    RawOpt,
    SamplerOpt,
    SeedOpt,
    SplitName,
    StepsOpt,
    common_train_parameters,
    config_parameters,
    parse_epochs,
    value_of,
)
from dgm_cli.errors import DgmError, Interrupted
from dgm_cli.progress import result_console, stderr_console
from dgm_cli.registry import get_spec, list_models
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
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.", metavar=""),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks for errors.", metavar="")] = False,
    ctx: typer.Context = None,
) -> None:
    _settings["debug"] = debug
    if ctx is not None and ctx.invoked_subcommand not in (None, "train") and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Several copies of another command would each do all the work, and write the same files.
        typer.echo(
            f"error: only dgm train runs data-parallel; run dgm {ctx.invoked_subcommand} without torchrun", err=True
        )
        raise typer.Exit(1)


def OutOpt(default: str):
    """--out of a command that writes one image; its default names the model, so that commands run one after
    another (a quick start) do not overwrite each other's pictures."""
    return typer.Option("--out", help=f"Output image (PNG); default {default}.", show_default=False)


def _reporter():
    from dgm_cli.progress import Reporter

    return Reporter(stderr_console())


def _load(model: str, checkpoint: Optional[Path], device: str):
    from dgm_cli.loading import load

    return load(checkpoint, model=model, device=device, reporter=_reporter())


def _print_json(payload: dict) -> None:
    typer.echo(json.dumps(payload, indent=None, sort_keys=False))


def _sampler_words(chosen: dict | None) -> str:
    """', ddim 50 steps, guidance 2' for a status line; '' for a model that draws in one pass."""
    if chosen is None:
        return ""
    words = f", {chosen['sampler']}" + (f" {chosen['steps']} steps" if chosen["sampler"] == "ddim" else "")
    words += f", eta {chosen['eta']:g}" if chosen["eta"] else ""
    return words + (f", guidance {chosen['guidance']:g}" if chosen["guidance"] else "")


def _sampler_options(sampler, steps, eta, guidance) -> dict:
    """The sampler options given, as the library takes them (left-out ones are not passed)."""
    options = {"sampler": value_of(sampler), "steps": steps, "eta": eta, "guidance": guidance}
    return {name: value for name, value in options.items() if value is not None}


def _flags(error: DgmError, names: dict) -> DgmError:
    """A library message that names keyword arguments, with the command's flags instead."""
    text = str(error)
    for keyword, flag in names.items():
        text = text.replace(keyword, flag)
    return DgmError(text)


SAMPLER_FLAGS = {
    f"{name}{after}": f"--{name}{after}"
    for name in ("sampler", "steps", "eta", "guidance")
    for after in (", ", ": ", " sets", " needs")
}


# ---------------------------------------------------------------- dgm train MODEL


def _given(ctx, values: dict) -> dict:
    """The options typed on the command line (a default is not a choice), as the library takes them."""
    given = {name: value for name, value in values.items() if ctx.get_parameter_source(name).name != "DEFAULT"}
    return {name: value.value if isinstance(value, Enum) else value for name, value in given.items()}


RESUME_MAY_CHANGE = {
    "epochs, the device and checkpoint_dir, save_every, precision, tensorboard": "--epochs, --device, --data-dir, --compile, --sync-batchnorm, --checkpoint-dir, --save-every, "
    "--precision, --tensorboard"
}


def _as_flags(error: DgmError) -> DgmError:
    """The library's refusal to resume, which names keyword arguments (zdim=, data=), in the command's flags."""
    if not str(error).startswith("resuming continues"):
        return error
    text = re.sub(
        r"\b([a-z_]+)=", lambda m: "--dataset" if m[1] == "data" else "--" + m[1].replace("_", "-"), str(error)
    )
    return _flags(DgmError(text), RESUME_MAY_CHANGE)


def _make_train_command(model_name: str):
    spec = get_spec(model_name)
    hints = get_type_hints(spec.config_class)

    def command(**kwargs):
        from dgm_cli.training import train

        ctx, json_output = kwargs.pop("ctx"), kwargs.pop("json_output")
        common = _given(ctx, {name: kwargs.pop(name) for name in COMMON_TRAIN_OPTIONS if name != "json_output"})
        fields_given = _given(ctx, kwargs)
        for name, value in fields_given.items():
            if hints[name] == tuple[int, ...]:
                fields_given[name] = parse_epochs(value, "--" + name.replace("_", "-"))
        common["data"] = common.pop("dataset", None)
        try:
            run = train(model_name, **common, reporter=_reporter(), **fields_given)
        except DgmError as error:
            raise _as_flags(error) from None
        _report_training(run, json_output)

    parameters = config_parameters(spec.config_class) + common_train_parameters()
    command.__signature__ = inspect.Signature(parameters)
    command.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
    command.__name__ = model_name
    command.__doc__ = f"{spec.description}."
    return user_errors(command)


def _report_training(run, json_output: bool) -> None:
    """The end of a training: where its files are; an interrupted run says how to continue and exits 130."""
    rank = int(os.environ.get("RANK", "0") or 0)
    if run.status == "interrupted":
        if not rank:
            typer.echo(f"interrupted by {run.message}", err=True)
        raise typer.Exit(130)
    copied = f" and {run.checkpoint}" if run.checkpoint else ""
    fallback = " (trained on the bundled mnist-mini subset: not comparable with full-MNIST results)"
    if not rank:
        stderr_console().print(
            f"done: {run.last}{copied}{fallback if run.data.get('fallback') else ''}", markup=False, soft_wrap=True
        )
    if json_output and not rank:
        _print_json({"model": run.model, "run": str(run.folder), "data": run.data, "final": run.records[-1]})


for _name in list_models():
    train_app.command(name=_name)(_make_train_command(_name))


# ---------------------------------------------------------------- sampling and figures


@app.command()
@user_errors
def sample(
    model: ModelArg,
    checkpoint: CheckpointArg = None,
    n: Annotated[int, typer.Option("-n", "--images", min=1, max=10_000, help="Number of images.")] = 64,
    out: Annotated[Optional[Path], OutOpt("MODEL-samples.png")] = None,
    nrow: Annotated[
        Optional[int],
        typer.Option(
            "--nrow",
            min=1,
            max=10_000,
            help="Images per row (left out: a square grid, ceil(sqrt(n)); at most n).",
            show_default=False,
        ),
    ] = None,
    binary: Annotated[
        bool, typer.Option("--binary", help="Draw binary images from the pixel probabilities.", metavar="")
    ] = False,
    raw: RawOpt = False,
    temperature: Annotated[
        float,
        typer.Option(
            "--temperature",
            min=0.0,
            max=10.0,
            help="Standard deviation of the latent draws (below 1: cleaner, less varied).",
        ),
    ] = 1.0,
    label: Annotated[
        Optional[int],
        typer.Option(
            "--label",
            min=0,
            help="Conditional models: draw only this class (0..9 for MNIST); left out, one row per "
            "class with ceil(n / classes) images each.",
            show_default=False,
        ),
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
    from dgm_cli.sampling import sample_figure

    net = _load(model, checkpoint, device)
    options = _sampler_options(sampler, steps, eta, guidance)
    try:
        figure = sample_figure(
            net,
            n,
            label=label,
            nrow=nrow,
            seed=seed,
            binary=binary,
            raw=raw,
            temperature=temperature,
            reporter=_reporter(),
            **options,
        )
    except DgmError as error:
        raise _flags(error, SAMPLER_FLAGS) from None
    out = out or Path(f"{model}-samples.png")
    save_image_grid(figure.images, out, nrow=figure.nrow)
    how = _sampler_words(net.describe_sampler(**options))
    stderr_console().print(
        f"wrote {figure.description} (temperature {temperature:g}{how}) from {net.path} to {out}", markup=False
    )


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
    out: Annotated[Optional[Path], OutOpt("MODEL-manifold.png")] = None,
    label: LabelOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Draw the learned manifold of a model with a 2-D latent space (of one class, for a conditional model)."""
    from dgm_cli.plots import save_image_grid
    from dgm_cli.sampling import manifold_images

    net = _load(model, checkpoint, device)
    out = out or Path(f"{model}-manifold.png")
    save_image_grid(manifold_images(net, grid, edge=edge, label=label), out, nrow=grid)
    of_class = "" if label is None else f" (class {label})"
    stderr_console().print(f"wrote the {grid}x{grid} manifold{of_class} of {net.path} to {out}", markup=False)


def _parse_digit_pair(text: Optional[str]) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != 2 or not all(part.isdigit() and len(part) == 1 for part in parts):
        raise typer.BadParameter(f"--classes takes two digits such as 3,8, not '{text}'")
    return int(parts[0]), int(parts[1])


IndexOpt = Annotated[
    Optional[int],
    typer.Option(
        min=0,
        help="With --from-images: index of that endpoint's image (row r "
        "uses index+r); left out: a random image per row (--seed).",
        show_default=False,
    ),
]
SeedOfOpt = Annotated[
    Optional[int],
    typer.Option(
        min=0,
        help="Seed of that endpoint's draw (row r uses seed+r); left out: drawn from --seed's stream.",
        show_default=False,
    ),
]


@app.command()
@user_errors
def interpolate(
    model: ModelArg,
    checkpoint: CheckpointArg = None,
    steps: Annotated[int, typer.Option("--steps", min=0, max=100, help="Points between the two endpoints.")] = 7,
    method: Annotated[
        Method, typer.Option("--method", help="Straight line, or along the sphere (keeps the norm).")
    ] = Method("slerp"),
    rows: Annotated[int, typer.Option("--rows", min=1, max=100, help="Independent pairs of endpoints.")] = 1,
    seed_a: SeedOfOpt = None,
    seed_b: SeedOfOpt = None,
    classes: Annotated[
        Optional[str],
        typer.Option(
            "--classes",
            help="Two digits, e.g. 3,8: endpoints the classifier of the model's data (shipped "
            "for MNIST and Fashion-MNIST, else --classifier) assigns to them.",
        ),
    ] = None,
    classifier: ClassifierOpt = None,
    from_images: Annotated[
        bool, typer.Option("--from-images", help="Walk between the posterior means of two real images.", metavar="")
    ] = False,
    image_a: IndexOpt = None,
    image_b: IndexOpt = None,
    split: Annotated[SplitName, typer.Option("--split", help="With --from-images: which split.")] = SplitName("test"),
    label: Annotated[
        Optional[int],
        typer.Option(
            "--label",
            min=0,
            help="Conditional models: the class held along every walk (0..9 for MNIST); left out, "
            "row r walks as class r mod 10 (with --from-images: as its first image's class).",
            show_default=False,
        ),
    ] = None,
    across_classes: Annotated[
        bool,
        typer.Option(
            "--across-classes",
            help="Conditional models: hold each row's latent (a prior draw, or with "
            "--from-images the first image's) and change the label through every class.",
            metavar="",
        ),
    ] = False,
    dataset: CheckpointDatasetOpt = None,
    data_dir: DataDirOpt = None,
    out: Annotated[Optional[Path], OutOpt("MODEL-interpolation.png")] = None,
    denoising_steps: Annotated[
        Optional[int],
        typer.Option(
            "--denoising-steps",
            min=1,
            max=10_000,
            help="Diffusion models: DDIM steps that decode (and with "
            "--from-images encode) each latent (default: the model's --sample-steps).",
            show_default=False,
        ),
    ] = None,
    guidance: GuidanceOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
) -> None:
    """Decode a walk through the latent space between two endpoints, one row per pair (a conditional model:
    walk with the label held, or hold the latent and change the label)."""
    from dgm_cli.interpolation import interpolation_figure
    from dgm_cli.plots import save_image_grid

    digits = _parse_digit_pair(classes)
    if from_images and digits is not None:
        raise typer.BadParameter("choose endpoints by --classes or by --from-images, not both")
    if across_classes and label is not None:
        raise typer.BadParameter("--across-classes shows every class; leave out --label")
    net = _load(model, checkpoint, device)
    try:
        figure = interpolation_figure(
            net,
            rows=rows,
            steps=steps,
            method=value_of(method),
            seed=seed,
            seed_a=seed_a,
            seed_b=seed_b,
            classes=digits,
            classifier=classifier,
            from_images=from_images,
            image_a=image_a,
            image_b=image_b,
            split=value_of(split),
            label=label,
            across_classes=across_classes,
            data=dataset,
            data_dir=data_dir,
            denoising_steps=denoising_steps,
            **_sampler_options(None, None, None, guidance),
        )
    except DgmError as error:
        raise _flags(error, {**SAMPLER_FLAGS, "steps, ": "--denoising-steps, "}) from None
    out = out or Path(f"{model}-interpolation.png")
    save_image_grid(figure.images, out, nrow=figure.nrow)
    stderr_console().print(f"wrote {figure.description} to {out}", markup=False)


# ---------------------------------------------------------------- evaluation and inspection


@app.command("eval")
@user_errors
def evaluate(
    model: ModelArg,
    checkpoint: CheckpointArg = None,
    split: Annotated[SplitName, typer.Option("--split", help="Which split to evaluate against.")] = SplitName("test"),
    iw_samples: Annotated[
        int,
        typer.Option(
            "--iw-samples",
            min=0,
            max=100_000,
            help="Posterior draws per image (importance sampling); 0 skips likelihoods.",
        ),
    ] = 1000,
    mc_samples: Annotated[
        int,
        typer.Option("--mc-samples", min=0, max=100_000, help="Prior draws per image (naive Monte-Carlo); 0 skips."),
    ] = 1000,
    dequantization_draws: Annotated[
        Optional[int],
        typer.Option(
            "--dequantization-draws",
            min=0,
            max=10_000,
            help="Flows: draws per image from the model's "
            "dequantization, uniform or learned (more than 1 adds the tighter importance-weighted bound); 0 "
            "skips likelihoods. Default: the published protocol of the checkpoint's preset (8 draws), else 1.",
            show_default=False,
        ),
    ] = None,
    samples: Annotated[
        Optional[int],
        typer.Option(
            "--samples",
            min=0,
            max=100_000,
            help="Generated images for the sample-quality metrics; 0 skips. Default: what the budget affords, up to "
            "10,000 (10,000 with --full).",
            show_default=False,
        ),
    ] = None,
    raw: RawOpt = False,
    temperature: Annotated[
        float,
        typer.Option(
            "--temperature",
            min=0.0,
            max=10.0,
            help="Standard deviation of the latent draws of the samples "
            "(below 1: cleaner, less varied); recorded in the report.",
        ),
    ] = 1.0,
    limit: Annotated[
        Optional[int],
        typer.Option(
            "--limit",
            min=1,
            help="Evaluate a random subset of N images of the split (drawn with --seed; likelihoods, accuracy); "
            "left out: all of it.",
        ),
    ] = None,
    minutes: Annotated[
        Optional[float],
        typer.Option(
            "--minutes",
            min=0.05,
            max=10_080,
            help="Answer in about this many minutes (default: 1): the images (a random subset, as --limit draws "
            "it) and samples not given are sized to fit, from costs measured first; the whole split and 10,000 "
            "samples when they fit. The report gives the full protocol's time.",
            show_default=False,
        ),
    ] = None,
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help="The full protocol, however long it takes: every image of the split and 10,000 samples (how "
            "the published numbers are measured). It says how long before it starts.",
            metavar="",
        ),
    ] = False,
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
        typer.Option(
            "--bound-timesteps",
            min=0,
            max=100_000,
            help="Diffusion models: terms of the variational bound "
            "evaluated per image: t = 1 and one drawn t in each of K - 1 equal strata of the rest (unbiased); "
            "the model's T or more evaluates all T terms; 0 skips the bound.",
        ),
    ] = 50,
    sampler: SamplerOpt = None,
    steps: StepsOpt = None,
    eta: EtaOpt = None,
    guidance: GuidanceOpt = None,
    classifier: ClassifierOpt = None,
) -> None:
    """Evaluate a checkpoint: likelihoods (VAE: ELBO, importance-weighted, prior Monte-Carlo; flow: exact density
    at dequantized images; diffusion: the variational bound; nats and bits/dim), sample quality (FID, KID,
    precision/recall, Inception Score, class coverage) beside the real-data floor, and a classifier's accuracy."""
    from dgm_cli.evaluation import evaluate as run_evaluation
    from dgm_cli.reports import print_report

    budget = _evaluation_minutes(minutes, full)
    net = _load(model, checkpoint, device)
    try:
        report = run_evaluation(
            net,
            dataset,
            split=value_of(split),
            iw_samples=iw_samples,
            mc_samples=mc_samples,
            dequantization_draws=dequantization_draws,
            bound_timesteps=bound_timesteps,
            samples=samples,
            raw=raw,
            temperature=temperature,
            limit=limit,
            minutes=budget,
            batch_size=batch_size,
            seed=seed,
            classifier=classifier,
            data_dir=data_dir,
            reporter=_reporter(),
            **_sampler_options(sampler, steps, eta, guidance),
        ).to_dict()
    except DgmError as error:
        raise _flags(error, SAMPLER_FLAGS) from None
    print_report(result_console(json_output), report)
    if result is not None:
        from dgm_cli.atomic import write_text

        write_text(result, json.dumps(report, indent=2))
    if json_output:
        _print_json(report)


def _evaluation_minutes(minutes: float | None, full: bool) -> float | None:
    """dgm eval's budget: --minutes, none with --full, else the library's default."""
    from dgm_cli.evaluation_budget import DEFAULT_MINUTES

    if full and minutes is not None:
        raise typer.BadParameter("give --full or --minutes, not both")
    return None if full else DEFAULT_MINUTES if minutes is None else minutes


@app.command()
@user_errors
def score(
    images: Annotated[
        Path,
        typer.Argument(
            help="The images to score: an .npz file holding one array (N, 28, 28) or "
            "(N, 1, 28, 28), uint8 or floats in [0, 1], or a folder of 28x28 PNG files."
        ),
    ],
    dataset: Annotated[str, typer.Option("--dataset", help=f"What the images imitate: {DATASET_HELP}.")] = "mnist",
    classifier: ClassifierOpt = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    json_output: JsonOpt = False,
) -> None:
    """Score any images, from any generator: FID, KID, precision/recall, Inception Score and class coverage against
    the dataset's test split, beside as many real validation images (the floor), in the feature space of a
    classifier trained on that data (named with its SHA-256 in the report)."""
    from dgm_cli.reports import print_sample_quality
    from dgm_cli.scoring import sample_quality

    report = sample_quality(
        images, dataset=dataset, classifier=classifier, data_dir=data_dir, device=device, reporter=_reporter()
    )
    report = {"images": str(images), **report}
    print_sample_quality(result_console(json_output), {**report, "model": str(images)})
    if json_output:
        _print_json(report)


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
    from dgm_cli.listing import presets_text
    from dgm_cli.presets import preset_table

    rows = preset_table([model.value] if model else list_models(), checkpoint_dir)
    if json_output:
        _print_json({"presets": rows})
    elif not rows:
        stderr_console().print("no presets" + (f" for the {model.value}" if model else ""), markup=False)
    else:
        typer.echo(presets_text(rows))


@app.command()
@user_errors
def info(
    checkpoint: Annotated[
        str,
        typer.Argument(
            help="A .safetensors checkpoint, a run folder (its best.safetensors, else last), or a "
            "pretrained model's name.",
            metavar="CHECKPOINT",
        ),
    ],
    json_output: JsonOpt = False,
) -> None:
    """Show a checkpoint's metadata: model, config, data and training facts."""
    from dgm_cli.checkpoint import check_checkpoint
    from dgm_cli.listing import checkpoint_text
    from dgm_cli.loading import resolve

    details = check_checkpoint(resolve(checkpoint, reporter=_reporter())).as_dict()
    if json_output:
        _print_json(details)
        return
    typer.echo(checkpoint_text(details))
    if details["data"].get("fallback"):
        stderr_console().print(
            f"warning: trained on the bundled mnist-mini subset ({details['data'].get('fallback_reason')}); "
            "its numbers are not comparable with full-MNIST results",
            markup=False,
            style="yellow",
        )


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
    from dgm_cli.listing import runs_text
    from dgm_cli.run_status import list_runs

    summaries = list_runs(folder, model=model.value if model else None)
    if json_output:
        _print_json({"folder": str(folder), "runs": [summary.as_dict() for summary in summaries]})
    elif not summaries:
        stderr_console().print(f"no training runs under {folder}", markup=False)
    else:
        typer.echo(runs_text(summaries))


@app.command()
@user_errors
def reproduce(
    out: Annotated[Path, typer.Option("--out", help="Where the runs, results and README.md go.")] = Path("report"),
    quick: Annotated[
        bool,
        typer.Option("--quick", help="A few epochs on the bundled mnist-mini subset, for CI and demos.", metavar=""),
    ] = False,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    json_output: JsonOpt = False,
) -> None:
    """Run the seed report's experiments (VAE zdim 20 and 2, GAN, both flows), evaluate them and write a report.

    Interrupted? Run the same command again: finished steps are kept and an interrupted training resumes."""
    from dgm_cli.reproduce import reproduce_report

    summary = reproduce_report(out, quick=quick, data_dir=data_dir, device=device, console=stderr_console())
    if json_output:
        _print_json(summary)


@app.command()
@user_errors
def models(
    pretrained: Annotated[
        bool,
        typer.Option(
            "--pretrained",
            help="List the pretrained models installed with dgm: "
            "what each is, its headline number, size and the commands that made it.",
            metavar="",
        ),
    ] = False,
    json_output: JsonOpt = False,
) -> None:
    """List the model families and what each can do, or (--pretrained) the model zoo."""
    from dgm_cli.listing import model_entries, models_text, pretrained_text
    from dgm_cli.zoo import list_pretrained

    entries = list_pretrained() if pretrained else model_entries()
    if json_output:
        _print_json({"pretrained" if pretrained else "models": entries})
    else:
        typer.echo((pretrained_text if pretrained else models_text)(entries))


def main() -> None:
    flush_subnormals()  # before any tensor operation starts the intra-op threads, which copy the flag
    app()


if __name__ == "__main__":
    sys.exit(main())
