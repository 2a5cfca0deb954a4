"""`dgm train --tensorboard`: the run's records as TensorBoard events in its own folder.

Per epoch, every number of the epoch's record (train/, val/, test/ scalars and
the speed); at the sample epochs, the sample grids the run folder holds; once,
at the start, the configuration as hyper-parameters, with the validation
metrics as the columns TensorBoard's HPARAMS tab compares runs by. The events
go into the run folder itself, so `tensorboard --logdir runs` shows every run.

The tensorboard package is optional (`pip install -e ".[tensorboard]"`); a run
that asks for it without it is refused before it starts.
"""

import json
from pathlib import Path

import numpy
from PIL import Image

from dgm_cli.errors import DgmError

# Record keys that are not per-split metrics: where in the run a record is, and the clock.
POSITION_KEYS = ("epoch", "step")
SPLITS = ("train", "val", "test")


def require_tensorboard():
    """The SummaryWriter class, or a one-line error that names the missing package."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise DgmError(
            '--tensorboard needs the tensorboard package; install it with pip install -e ".[tensorboard]" '
            "(or pip install tensorboard), or leave out --tensorboard"
        ) from None
    return SummaryWriter


def scalar_tag(key: str) -> str:
    """train_elbo -> train/elbo; seconds -> speed/seconds."""
    split, _, name = key.partition("_")
    return f"{split}/{name}" if split in SPLITS and name else f"speed/{key}"


def flat_hyperparameters(facts: dict) -> dict:
    """TensorBoard's hyper-parameters are numbers, strings or booleans: tuples and None become text."""
    flat = {}
    for key, value in facts.items():
        flat[key] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value)
    return flat


class TensorBoardLog:
    """A SummaryWriter on the run folder; `continue_at` is the first epoch a resumed run logs (None: a new run).

    A resumed writer hides what an earlier process logged at or after that epoch (a run killed after
    logging an epoch that its saved state does not hold logs that epoch again), and the hyper-parameters
    are written once, by the run's first process.
    """

    def __init__(self, folder: Path, *, hyperparameters: dict, metrics: list[str], continue_at: int | None = None):
        writer_class = require_tensorboard()
        from torch.utils.tensorboard.summary import hparams

        self.writer = writer_class(log_dir=str(folder), purge_step=continue_at)
        if continue_at is None:
            experiment, start, end = hparams(flat_hyperparameters(hyperparameters), {tag: 0.0 for tag in metrics})
            for summary in (experiment, start, end):
                self.writer.file_writer.add_summary(summary)

    def record(self, record: dict) -> None:
        epoch = record["epoch"]
        for key, value in record.items():
            if key not in POSITION_KEYS and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(scalar_tag(key), value, epoch)
        self.writer.flush()

    def images(self, paths: list[Path], epoch: int) -> None:
        """The grids saved for `epoch`, by their names: samples/epoch_003_binary.png -> samples/binary."""
        for path in paths:
            variant = path.stem.split("_", 2)[2] if path.stem.count("_") >= 2 else ""
            tag = f"{path.parent.name}/{variant}" if variant else path.parent.name
            pixels = numpy.asarray(Image.open(path).convert("L"))
            self.writer.add_image(tag, pixels, epoch, dataformats="HW")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
