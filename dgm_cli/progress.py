"""Where output goes and how progress looks: one rich bar on stderr, shared by training and evaluation.

The usual convention, so that `dgm eval vae > results.txt` and `dgm models | grep vae` work: a command's
result (the evaluation tables, the model list, a checkpoint's metadata) goes to stdout; progress, warnings
and status lines go to stderr; with --json, stdout holds exactly one JSON object and the human-readable
result moves to stderr.
"""

import contextlib
import sys
import time
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Column

# A pipe, a file or a CI log has no width: rich would wrap every line, table and bar at 80 columns there, so
# `dgm ... | grep` would see broken rows. Off a terminal, lines are as long as their content.
UNBOUNDED_WIDTH = 100_000


def console_for(stream: TextIO, *, stderr: bool) -> Console:
    """A console on stdout or stderr: the terminal's width on a terminal, unbounded lines anywhere else."""
    is_terminal = hasattr(stream, "isatty") and stream.isatty()
    return Console(stderr=stderr, highlight=False, **({} if is_terminal else {"width": UNBOUNDED_WIDTH}))


def stderr_console() -> Console:
    return console_for(sys.stderr, stderr=True)


def result_console(json_output: bool) -> Console:
    """Where a command's human-readable result goes: stdout, or stderr when stdout holds the JSON."""
    return stderr_console() if json_output else console_for(sys.stdout, stderr=False)


def quiet_console() -> Console:
    """For the processes other than rank 0 under torchrun: one process reports for all."""
    return Console(stderr=True, quiet=True)


class LogProgress:
    """Progress for a pipe, a file or a CI log, where a redrawn bar would be one endless line: a whole line
    each time a task passes another tenth of its total (none when log_every is None: the caller prints its
    own lines, as the trainer does per epoch). Takes the calls of rich's Progress that dgm makes."""

    def __init__(self, console: Console, log_every: float | None):
        self.console, self.log_every, self.tasks = console, log_every, []

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        return None

    def add_task(self, description: str, total: int, completed: int = 0, **fields) -> int:
        self.tasks.append(
            {
                "description": description,
                "total": total,
                "completed": completed,
                "logged": self._tenths(completed, total),
                "start": time.monotonic(),
            }
        )
        return len(self.tasks) - 1

    def update(self, task: int, *, description: str | None = None, **fields) -> None:
        if description is not None:
            self.tasks[task]["description"] = description

    def advance(self, task: int, count: int = 1) -> None:
        state = self.tasks[task]
        state["completed"] += count
        tenths = self._tenths(state["completed"], state["total"])
        if self.log_every is not None and tenths > state["logged"]:
            state["logged"] = tenths
            elapsed = time.monotonic() - state["start"]
            self.console.print(
                f"{state['description']}: {state['completed']:,}/{state['total']:,} "
                f"({100 * state['completed'] / state['total']:.0f}%, {elapsed:.0f} s)",
                markup=False,
            )

    def _tenths(self, completed: int, total: int) -> int:
        return int(completed / total / (self.log_every or 1)) if total else 0


def make_progress(console: Console, *, extra: str = "", log_every: float | None = 0.1):
    """A bar with counts, elapsed and remaining time on a terminal (`extra`: a task field shown after the bar);
    elsewhere a LogProgress that writes whole lines every `log_every` of a task."""
    if not console.is_terminal:
        return LogProgress(console, log_every)

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
