"""README.md's Quick start runs as written, in a fresh folder, and leaves the installed models and every tracked
file of the checkout as they were."""

import hashlib
import os
import re
import shlex
import subprocess
import sys

from conftest import REPO

from dgm_cli.data import ASSETS


def quick_start_commands() -> list[list[str]]:
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## Quick start.*?```sh\n(.*?)```", readme, flags=re.S).group(1)
    return [shlex.split(line.split("#")[0]) for line in block.splitlines() if line.split("#")[0].strip()]


def fingerprint() -> dict[str, str]:
    """The SHA-256 of every shipped asset, and git's view of the checkout's tracked files."""
    files = {str(path): hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(ASSETS.rglob("*.*"))}
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True
    )
    return {**files, "git status": status.stdout if status.returncode == 0 else "no git"}


def test_the_quick_start_runs_and_changes_nothing_shipped(tmp_path):
    commands = quick_start_commands()
    assert [command[:2] for command in commands][:2] == [["dgm", "models"], ["dgm", "sample"]]
    before = fingerprint()
    # offline and without MNIST (the bundled subset); two threads unless the suite shares the cores out
    environment = {"OMP_NUM_THREADS": "2", **os.environ}
    for command in commands:
        assert command[0] == "dgm"
        if "--minutes" in command:  # the training's budget, shortened for the suite
            command[command.index("--minutes") + 1] = "0.05"
        result = subprocess.run(
            [sys.executable, "-m", "dgm_cli", *command[1:]],
            cwd=tmp_path,
            env=environment,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, f"{shlex.join(command)}: {result.stderr}"
    assert sorted(path.name for path in tmp_path.glob("*.png")) == ["diffusion.png", "gan.png", "manifold.png"]
    assert fingerprint() == before
