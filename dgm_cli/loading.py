"""Finding and loading a trained model: a checkpoint file, a run folder, or a model's name.

`load` is `dgm.load` and what every command that reads a model calls. A run
folder stands for its best.safetensors (else last.safetensors); a name (a
family such as "vae", or a pretrained model's such as "vae-zdim2") for
checkpoints/NAME.safetensors in the current folder, where `dgm train` puts
what it trains, else the pretrained model of that name in the package's zoo.
"""

from pathlib import Path

import torch

from dgm_cli.checkpoint import default_checkpoint, load_checkpoint
from dgm_cli.device import resolve_device
from dgm_cli.errors import DgmError
from dgm_cli.progress import Reporter
from dgm_cli.zoo import family_of, find

RUN_FILES = (("best.safetensors", "its best epoch"), ("last.safetensors", "its last epoch"))


def checkpoint_in(path: Path, reporter: Reporter | None = None) -> Path:
    """The checkpoint a path names: the file itself, or a run folder's best.safetensors, else its last."""
    path = Path(path)
    if not path.is_dir():
        return path
    for name, what in RUN_FILES:
        if (path / name).is_file():
            (reporter or Reporter()).note(f"using {path / name} ({what})")
            return path / name
    raise DgmError(
        f"{path} is a folder without best.safetensors or last.safetensors; pass a run folder or a checkpoint file"
    )


def named_checkpoint(name: str, reporter: Reporter | None = None) -> Path:
    """checkpoints/NAME.safetensors in the current folder (what `dgm train` published there), else the
    pretrained model of that name."""
    family_of(name)  # an unknown name fails here, listing the known ones
    own = default_checkpoint(name)
    if own.is_file():
        (reporter or Reporter()).note(f"using {own} (trained here; the pretrained {name} is used where there is none)")
        return own
    pretrained = find(name)
    if pretrained is None:
        raise DgmError(
            f"there is no pretrained {name} and {own} does not exist; train one with `dgm train {name}` "
            "or pass a checkpoint path"
        )
    (reporter or Reporter()).note(f"using the pretrained {name} ({pretrained.path})")
    return pretrained.path


def is_name(source) -> bool:
    """True when `source` is a string naming a family or a pretrained model, not a file or folder that exists."""
    if not isinstance(source, str) or Path(source).exists():
        return False
    try:
        family_of(source)
        return True
    except DgmError:
        return False


def resolve(source: str | Path | None, model: str | None = None, reporter: Reporter | None = None) -> Path:
    """The checkpoint file that `source` names (a file, a run folder, a family or a pretrained model's name)
    or, without one, the model `model` names."""
    if source is None:
        if model is None:
            raise DgmError("name a checkpoint, a run folder or a model")
        return named_checkpoint(model, reporter)
    if is_name(source):
        return named_checkpoint(source, reporter)
    return checkpoint_in(Path(source), reporter)


def load(
    source: str | Path | None = None,
    *,
    model: str | None = None,
    device: str | torch.device = "auto",
    reporter: Reporter | None = None,
):
    """A trained model (an nn.Module in eval mode on `device`) from a checkpoint file, a run folder (its best
    epoch, else its last) or a name: a family ("gan") or a pretrained model ("vae-zdim2"; `dgm models
    --pretrained` lists them), read from checkpoints/NAME.safetensors when you trained one there, else from the
    zoo installed with the package.

    model: without `source`, the name to load; with it, the family the checkpoint must hold (a pretrained
    model's name stands for its family), checked before any weight is read.
    device: "auto" (the first GPU, else the CPU), "cpu", "cuda" or "cuda:N", or a torch.device.
    The model carries `config`, `data_facts` (the data it was trained on), `training_facts` (epoch, step,
    seed, metrics) and `path`; `model.save(path)` writes it back in the same format.
    """
    path = resolve(source, model, reporter)
    device = device if isinstance(device, torch.device) else resolve_device(device)
    loaded, info = load_checkpoint(path, expected_model=None if model is None else family_of(model), device=device)
    if info.sha256 is None:
        (reporter or Reporter()).note(
            f"{path} was written before checkpoints recorded a SHA-256 of their weights, so they cannot be verified; "
            "model.save(path) writes it again with one",
            warning=True,
        )
    return loaded
