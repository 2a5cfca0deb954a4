"""Finding and loading a trained model: a checkpoint file, a run folder, or a model's name.

`load` is `dgm.load` and what every command that reads a model calls. A run
folder stands for its best.safetensors (else last.safetensors); a model's
name for checkpoints/NAME.safetensors in the current folder, else the
checkpoint that ships inside the package.
"""

from pathlib import Path

import torch

from dgm_cli.checkpoint import default_checkpoint, load_checkpoint
from dgm_cli.device import resolve_device
from dgm_cli.errors import DgmError
from dgm_cli.progress import Reporter
from dgm_cli.registry import get_spec, list_models

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
    raise DgmError(f"{path} is a folder without best.safetensors or last.safetensors; pass a run folder or a checkpoint file")


def named_checkpoint(model_name: str, reporter: Reporter | None = None) -> Path:
    """checkpoints/MODEL.safetensors in the current folder, else the model's shipped checkpoint."""
    default = default_checkpoint(model_name)
    if default.exists():
        return default
    shipped = get_spec(model_name).shipped_checkpoint
    if shipped is None:
        raise DgmError(f"no checkpoint given and {default} does not exist; train one with `dgm train {model_name}` "
                       "or pass a path")  # fmt: skip
    (reporter or Reporter()).note(f"using the shipped {model_name} {shipped}")
    return shipped


def resolve(source: str | Path | None, model: str | None = None, reporter: Reporter | None = None) -> Path:
    """The checkpoint file that `source` names (a file, a run folder, a model's name) or, without one,
    `model`'s default."""
    if source is None:
        if model is None:
            raise DgmError("name a checkpoint, a run folder or a model")
        return named_checkpoint(model, reporter)
    if isinstance(source, str) and source in list_models() and not Path(source).exists():
        return named_checkpoint(source, reporter)
    return checkpoint_in(Path(source), reporter)


def load(source: str | Path | None = None, *, model: str | None = None, device: str | torch.device = "auto",
         reporter: Reporter | None = None):  # fmt: skip
    """A trained model (an nn.Module in eval mode on `device`) from a checkpoint file, a run folder (its best
    epoch, else its last) or a model's name ("vae": checkpoints/vae.safetensors, else the shipped one).

    model: the family the checkpoint must hold ("vae", ...), checked before any weight is read.
    device: "auto" (the first GPU, else the CPU), "cpu", "cuda" or "cuda:N", or a torch.device.
    The model carries `config`, `data_facts` (the data it was trained on), `training_facts` (epoch, step,
    seed, metrics) and `path`; `model.save(path)` writes it back in the same format.
    """
    path = resolve(source, model, reporter)
    device = device if isinstance(device, torch.device) else resolve_device(device)
    return load_checkpoint(path, expected_model=model, device=device)[0]
