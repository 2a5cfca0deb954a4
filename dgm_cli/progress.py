"""How progress looks: one rich bar on stderr, shared by training and evaluation."""

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


def quiet_console() -> Console:
    """For the processes other than rank 0 under torchrun: one process reports for all."""
    return Console(stderr=True, quiet=True)


def make_progress(console: Console, *, extra: str = "") -> Progress:
    """A bar with counts, elapsed and remaining time; `extra` is a task field shown after the bar."""
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(extra),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    ]
    return Progress(*columns, console=console, transient=False)
