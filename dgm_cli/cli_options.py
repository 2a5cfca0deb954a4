"""The command line's option types: the shared options of every command, and `dgm train MODEL`'s options
generated from each model's config dataclass (help text, limits and choices from its fields)."""

import inspect
from dataclasses import fields
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional, get_type_hints

import typer

from dgm_cli.registry import list_models


def choices(name: str, values) -> type[Enum]:
    return Enum(name, {value: value for value in values}, type=str)


def lazy_choices():
    from dgm_cli.image_folder import FITS
    from dgm_cli.interpolation import METHODS
    from dgm_cli.models.diffusion import SAMPLERS
    from dgm_cli.speed import PRECISIONS

    return (
        choices("ImageFit", FITS),
        choices("Method", METHODS),
        choices("SamplerName", SAMPLERS),
        choices("Precision", PRECISIONS),
    )


ModelName = choices("ModelName", list_models())
SplitName = choices("SplitName", ("train", "val", "test"))
ImageFit, Method, SamplerName, Precision = lazy_choices()


def check_device(value: str) -> str:
    from dgm_cli.device import DEVICE_PATTERN

    if not DEVICE_PATTERN.match(value):
        raise typer.BadParameter(f"'{value}' is not a device; use auto, cpu, cuda or cuda:N")
    return value


def value_of(choice):
    """An enum option's string, None left as it is."""
    return None if choice is None else choice.value


def check_model_name(value: str) -> str:
    """A family (`dgm models`) or a pretrained model's name (`dgm models --pretrained`)."""
    from dgm_cli.errors import DgmError
    from dgm_cli.zoo import family_of

    try:
        family_of(value)
    except DgmError as error:
        raise typer.BadParameter(str(error)) from None
    return value


ModelArg = Annotated[
    str,
    typer.Argument(
        help="A family (vae, gan, flow, diffusion, classifier) or a pretrained model's name (dgm models --pretrained).",
        callback=check_model_name,
        metavar="MODEL",
    ),
]
CheckpointArg = Annotated[
    Optional[Path],
    typer.Argument(
        help="A .safetensors checkpoint, or a run folder (its best.safetensors, else last.safetensors); default: "
        "checkpoints/MODEL.safetensors if you trained one here, else the pretrained MODEL.",
        show_default=False,
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.", callback=check_device)]
SeedOpt = Annotated[int, typer.Option("--seed", min=0, max=2**63 - 1, help="Random seed.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.", metavar="")]
DataDirOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--data-dir",
        help="Folder holding MNIST/raw/*.gz (default $DGM_DATA_DIR, else ~/.cache/dgm/data); "
        "for a model trained on an image folder that has moved, the folder's new place.",
    ),
]
LabelOpt = Annotated[
    Optional[int],
    typer.Option(
        "--label",
        min=0,
        help="Conditional models: the class to draw (0..9 for MNIST; an image folder's class index).",
        show_default=False,
    ),
]
SamplerOpt = Annotated[
    Optional[SamplerName],
    typer.Option(
        "--sampler",
        help="Diffusion models: ddim (--steps of them; deterministic unless --eta) or "
        "ancestral (all T steps); default ddim.",
        show_default=False,
    ),
]
StepsOpt = Annotated[
    Optional[int],
    typer.Option(
        "--steps",
        "--denoising-steps",
        min=1,
        max=10_000,
        help="Diffusion models: DDIM denoising steps (default: the model's --sample-steps).",
        show_default=False,
    ),
]
EtaOpt = Annotated[
    Optional[float],
    typer.Option(
        "--eta",
        min=0.0,
        max=1.0,
        help="Diffusion models, DDIM: the noise each step adds, from 0 "
        "(deterministic, the default) to 1 (the ancestral sampler's own posterior noise, on the --steps "
        "steps: the ancestral sampler respaced).",
        show_default=False,
    ),
]
GuidanceOpt = Annotated[
    Optional[float],
    typer.Option(
        "--guidance",
        min=0.0,
        max=100.0,
        help="Conditional diffusion models: classifier-free guidance "
        "weight w, eps = (1 + w) eps(x, y) - w eps(x) (default 0: none).",
        show_default=False,
    ),
]
RawOpt = Annotated[
    bool,
    typer.Option(
        "--raw", help="Sample from the live weights, not their moving average (models trained with --ema).", metavar=""
    ),
]
DATASET_HELP = "mnist, fashion-mnist, mnist-mini, or a folder of images (PNG, JPEG, BMP, WebP; one subfolder per class)"
CheckpointDatasetOpt = Annotated[
    Optional[str],
    typer.Option("--dataset", help=f"{DATASET_HELP}; default: the data the model was trained on.", show_default=False),
]
ClassifierOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--classifier",
        help="The classifier whose features measure the images (dgm train classifier on "
        "the same data); default: the shipped one that fits the data (MNIST, Fashion-MNIST).",
        show_default=False,
    ),
]


COMMON_TRAIN_OPTIONS = {
    "seed": (
        Optional[int],
        typer.Option("--seed", min=0, max=2**63 - 1, help="Random seed (default 0).", show_default=False),
    ),
    "device": (str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.", callback=check_device)),
    "out": (Optional[Path], typer.Option("--out", help="Run folder (default runs/MODEL/DATE-TIME).")),
    "dataset": (
        Optional[str],
        typer.Option(
            "--dataset",
            help=f"{DATASET_HELP}; default mnist, falling back to the bundled mnist-mini.",
            show_default=False,
        ),
    ),
    "val_size": (
        Optional[int],
        typer.Option(
            "--val-size",
            min=1,
            help="Images at the end of a named dataset's "
            "training file held out for validation (default: a sixth, 10,000 of MNIST's 60,000; the IWAE "
            "paper's protocol holds out 400). Recorded with the run: --resume and dgm eval split the same way.",
            show_default=False,
        ),
    ),
    "image_fit": (
        Optional[ImageFit],
        typer.Option(
            "--image-fit",
            help="An image folder's images that are not "
            "28x28: keep the centred largest square (crop, the default) or pad with black to a square (pad), "
            "then a Lanczos resize.",
            show_default=False,
        ),
    ),
    "skip_bad_images": (
        bool,
        typer.Option(
            "--skip-bad-images",
            help="An image folder's files that cannot be read as "
            "images are left out and counted (default: stop at them).",
            metavar="",
        ),
    ),
    "data_dir": (Optional[Path], DataDirOpt.__metadata__[0]),
    "checkpoint_dir": (
        Optional[Path],
        typer.Option(
            "--checkpoint-dir",
            help="Where the final model is copied as MODEL.safetensors (default: checkpoints).",
            show_default=False,
        ),
    ),
    "resume": (
        Optional[str],
        typer.Option(
            "--resume",
            help="Continue the run in this folder from its "
            "state.safetensors ('last': the newest run of this model under runs/); its own settings are used, "
            "--epochs may extend it.",
        ),
    ),
    "init_from": (
        Optional[Path],
        typer.Option(
            "--init-from",
            help="Start a new run from this checkpoint's weights "
            "(and weight average) instead of random ones: fine-tuning, or more epochs for a model whose run "
            "folder is gone. Options left out are the checkpoint's own; the optimizer and the learning-rate "
            "schedule start afresh.",
            show_default=False,
        ),
    ),
    "save_every": (
        Optional[int],
        typer.Option(
            "--save-every",
            min=1,
            max=100_000,
            help="Epochs between checkpoints (default 1; always at the end and on Ctrl-C).",
            show_default=False,
        ),
    ),
    "compile": (
        bool,
        typer.Option("--compile", help="torch.compile the training step (see docs/performance.md).", metavar=""),
    ),
    "precision": (
        Optional[Precision],
        typer.Option(
            "--precision",
            help="fp32 (the default); tf32 matmuls (CUDA); bf16 "
            "in training steps (matmuls on the CPU, autocast on a GPU).",
            show_default=False,
        ),
    ),
    "sync_batchnorm": (
        bool,
        typer.Option(
            "--sync-batchnorm",
            help="Under torchrun on GPUs: batch normalisation over "
            "the global batch (SyncBatchNorm) instead of each process's shard.",
            metavar="",
        ),
    ),
    "tensorboard": (
        bool,
        typer.Option(
            "--tensorboard",
            help="Also write TensorBoard events into the run folder "
            '(tensorboard --logdir runs); needs pip install -e ".[tensorboard]".',
            metavar="",
        ),
    ),
    "json_output": (bool, JsonOpt.__metadata__[0]),
}
COMMON_DEFAULTS = {
    "device": "auto",
    "skip_bad_images": False,
    "compile": False,
    "sync_batchnorm": False,
    "tensorboard": False,
    "json_output": False,
}


def config_parameters(config_class) -> list[inspect.Parameter]:
    """One typer option per config field, with its help text, limits and choices."""
    hints = get_type_hints(config_class)
    parameters = []
    for spec in fields(config_class):
        if spec.metadata.get("from_data"):  # set by training from the dataset, not an option
            continue
        assert spec.name not in COMMON_TRAIN_OPTIONS, f"config field {spec.name} clashes with a common option"
        kind, meta, flag, default = hints[spec.name], spec.metadata, "--" + spec.name.replace("_", "-"), spec.default
        if meta.get("choices"):
            kind = choices(spec.name, meta["choices"])
            option, default = typer.Option(flag, help=meta["help"]), kind(default)
        elif kind == tuple[int, ...]:
            kind, option = str, typer.Option(flag, help=meta["help"] + " Comma-separated.")
            default = ",".join(str(value) for value in default)
        elif kind is bool:
            option = typer.Option(f"{flag}/--no-{flag[2:]}", help=meta["help"], metavar="")
        else:
            option = typer.Option(flag, help=meta["help"], min=meta.get("min"), max=meta.get("max"))
        parameters.append(
            inspect.Parameter(
                spec.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[kind, option]
            )
        )
    return parameters


def common_train_parameters() -> list[inspect.Parameter]:
    parameters = [
        inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=COMMON_DEFAULTS.get(name), annotation=Annotated[kind, option]
        )
        for name, (kind, option) in COMMON_TRAIN_OPTIONS.items()
    ]
    return parameters + [inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)]


def parse_epochs(text: str, flag: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(f"{flag} takes comma-separated whole numbers such as 0,10,20, not '{text}'") from None
    if any(value < 0 for value in values):
        raise typer.BadParameter(f"{flag} takes epochs of 0 or more, not '{text}'")
    return values
