"""The progress bar keeps its numbers whole on an ordinary 80-column terminal."""

import io

from rich.console import Console

from dgm_cli.progress import make_progress


def test_an_80_column_bar_shows_the_whole_count_and_status():
    output = io.StringIO()
    console = Console(file=output, width=80, force_terminal=True)  # a terminal: off one, progress is lines
    with make_progress(console, extra="{task.fields[status]}") as progress:
        progress.add_task("epoch 1/40", total=15640, completed=5217, status="elbo -123.456  10,000 img/s")
    line = [line for line in output.getvalue().replace("\r", "\n").splitlines() if "epoch 1/40" in line][-1]
    assert "5217/15640" in line and "10,000 img/s" in line and "…" not in line
