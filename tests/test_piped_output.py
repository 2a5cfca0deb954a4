"""Off a terminal (a pipe, a file, a CI log) nothing dgm prints is wrapped or cut: results stay whole rows for
grep, status lines stay one line, and progress becomes whole lines instead of a redrawn bar. Run as real
subprocesses with pipes, as a shell script would."""

import os
import subprocess
import sys

import dgm_cli
from dgm_cli.zoo import find


def dgm_piped(*args: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "COLUMNS": "80"}  # what a CI runner's environment often says
    return subprocess.run([sys.executable, "-m", "dgm_cli", *args], capture_output=True, text=True, env=environment)


def test_results_and_status_lines_are_whole_rows_in_a_pipe():
    models = dgm_piped("models")
    row = next(line for line in models.stdout.splitlines() if line.startswith("vae "))
    assert row.endswith("encoder, latent, latent_likelihood, manifold, sample")  # the capabilities, on the row
    info = dgm_piped("info", "vae")
    assert info.stdout.splitlines()[0].endswith(f"dgm {dgm_cli.__version__}")
    sampled = dgm_piped("sample", "vae", "-n", "4", "--out", "samples.png")
    assert sampled.returncode == 0, sampled.stderr
    assert f"from {find('vae').path} to samples.png" in sampled.stderr.splitlines()[-1]


def test_progress_in_a_log_is_whole_lines_at_each_tenth():
    result = dgm_piped(
        "eval", "vae", "--dataset", "mnist-mini", "--limit", "500", "--samples", "0", "--mc-samples", "0"
    )
    assert result.returncode == 0, result.stderr
    progress = [line for line in result.stderr.splitlines() if line.startswith("log-likelihood, test images: ")]
    assert [line.split(": ")[1].split(" ")[0] for line in progress] == [f"{n}/500" for n in range(100, 501, 100)]
    assert "━" not in result.stderr and "\r" not in result.stderr
    table = result.stdout.splitlines()
    assert any(line.startswith("│ importance-weighted, q(z|x), k=1000 ") for line in table)  # not wrapped in its cell
