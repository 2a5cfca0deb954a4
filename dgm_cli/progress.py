"""Where output goes and how progress looks: one rich bar on stderr, shared by training and evaluation.

The usual convention, so that `dgm eval vae > results.txt` and `dgm models | grep vae` work: a command's
result (the evaluation tables, the model list, a checkpoint's metadata) goes to stdout; progress, warnings
and status lines go to stderr; with --json, stdout holds exactly one JSON object and the human-readable
result moves to stderr.
"""

import contextlib

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Column


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


def result_console(json_output: bool) -> Console:
    """Where a command's human-readable result goes: stdout, or stderr when stdout holds the JSON."""
    return stderr_console() if json_output else Console(highlight=False)


def quiet_console() -> Console:
    """For the processes other than rank 0 under torchrun: one process reports for all."""
    return Console(stderr=True, quiet=True)


def make_progress(console: Console, *, extra: str = "") -> Progress:
    """A bar with counts, elapsed and remaining time; `extra` is a task field shown after the bar."""

    # On a narrow terminal the bar gives way and the numbers stay whole: without this, rich shrank every
    # column alike and cut the count to "5217/156…" in an 80-column window.
    def whole() -> Column:
        return Column(no_wrap=True)

    columns = [
        TextColumn("{task.description}", table_column=whole()),
        BarColumn(bar_width=None, table_column=Column(ratio=1)),
        MofNCompleteColumn(table_column=whole()),
        TextColumn(extra, table_column=whole()),
        TimeElapsedColumn(table_column=whole()),
        TextColumn("eta", table_column=whole()),
        TimeRemainingColumn(table_column=whole()),
    ]
    return Progress(*columns, console=console, transient=False)


class Reporter:
    """Where a long library call shows its progress and notes: nowhere by default, so that a call from a
    notebook or a script stays quiet; the CLI passes Reporter(stderr_console()) for rich bars and status
    lines on stderr."""

    def __init__(self, console: Console | None = None):
        self.console = console if console is not None else quiet_console()

    @contextlib.contextmanager
    def task(self, description: str, total: int):
        """A bar for the block; yields advance(count)."""
        with make_progress(self.console) as bar:
            task = bar.add_task(description, total=total)
            yield lambda count: bar.advance(task, count)

    def note(self, message: str, *, warning: bool = False) -> None:
        """A status line (a warning in yellow), printed whole, without rich markup: "[Errno -2]" is no style."""
        self.console.print(
            ("warning: " if warning else "") + message,
            markup=False,
            soft_wrap=True,
            style="yellow" if warning else None,
        )

    @contextlib.contextmanager
    def decoding(self):
        """For the block: the data loaders' `progress` argument, which they call with the number of images to
        decode and which returns the advance of a bar over them."""
        with make_progress(self.console) as bar:

            def start(total: int):
                task = bar.add_task("decoding images", total=total)
                return lambda count: bar.advance(task, count)

            yield start

    def read_data(self, load):
        """Run a data loader, load(progress), with a bar over any decoding, then say what loading did (the
        notes of an image folder: ignored or skipped files, the cache)."""
        with self.decoding() as progress:
            dataset = load(progress)
        for note in dataset.notes:
            self.note(note)
        return dataset
