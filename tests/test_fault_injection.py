"""Every file dgm writes goes through atomic.atomic_path; this module makes that write fail, for each command
that writes and each file it writes, with a full disk (ENOSPC), an I/O error (EIO) and a read-only file system
(EROFS). Each time: one line on stderr, exit status 1, no traceback, the file that was there before untouched,
no temporary left behind, and (for a training) a folder that the same command or --resume then accepts.

Reading faults (truncated files, flipped bytes, dangling links, a file where a folder should be) are in
test_hostile.py, test_corruption.py and test_small_faults.py; a kill at every moment of a checkpoint write in
test_resume.py."""

import errno
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

import dgm_cli.atomic as atomic
from dgm_cli.cli import app

FAULTS = [errno.ENOSPC, errno.EIO, errno.EROFS]
OLD = b"what was there before"


def failing_at(monkeypatch, name: str, code: int) -> None:
    """Make the write of every file called `name` fail with OS error `code`, after its bytes went to the
    temporary file (the last moment a write can fail)."""
    real_replace = os.replace

    def replace(source, target):
        if Path(target).name == name:
            raise OSError(code, os.strerror(code))
        return real_replace(source, target)

    monkeypatch.setattr(atomic.os, "replace", replace)


def assert_one_line_failure(result, name: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: cannot write ") and name in lines[-1], result.stderr
    assert "Traceback" not in result.output
    assert not [path for path in Path(".").rglob("*") if atomic.TEMPORARY_NAME.match(path.name)]


WRITES = {  # a command that writes one file over an existing one: (arguments, the file)
    "sample": (["sample", "vae", "-n", "4", "--out", "picture.png"], "picture.png"),
    "manifold": (["manifold", "vae-zdim2", "--grid", "3", "--out", "picture.png"], "picture.png"),
    "interpolate": (["interpolate", "vae", "--rows", "1", "--steps", "1", "--out", "picture.png"], "picture.png"),
    "eval --result": (
        [
            "eval",
            "vae",
            "--dataset",
            "mnist-mini",
            "--limit",
            "10",
            "--iw-samples",
            "5",
            "--mc-samples",
            "0",
            "--samples",
            "0",
            "--result",
            "report.json",
        ],
        "report.json",
    ),
}


@pytest.mark.parametrize("code", FAULTS, ids=errno.errorcode.get)
@pytest.mark.parametrize("command", WRITES)
def test_a_failed_write_keeps_the_file_that_was_there(command, code, monkeypatch):
    arguments, name = WRITES[command]
    Path(name).write_bytes(OLD)
    failing_at(monkeypatch, name, code)
    assert_one_line_failure(CliRunner().invoke(app, arguments), name)
    assert Path(name).read_bytes() == OLD


TRAIN = ["train", "vae", "--epochs", "2", "--hidden", "8", "--dataset", "mnist-mini", "--sample-epochs", "0,2"]


@pytest.mark.parametrize("code", FAULTS, ids=errno.errorcode.get)
@pytest.mark.parametrize(
    "name",
    [
        "config.json",
        "metrics.jsonl",
        "last.safetensors",
        "best.safetensors",
        "state.safetensors",
        "epoch_000.png",
        "curves.png",
    ],
)
def test_a_training_whose_write_fails_can_be_run_again_or_resumed(name, code, monkeypatch):
    with monkeypatch.context() as patch:  # the fault lasts for the first attempt; then the disk has room again
        failing_at(patch, name, code)
        assert_one_line_failure(CliRunner().invoke(app, [*TRAIN, "--out", "run"]), name)
    if Path("run/state.safetensors").is_file():  # something resumable was saved: continue it
        again = CliRunner().invoke(app, ["train", "vae", "--resume", "run", "--epochs", "3"])
    else:  # nothing resumable: the same command starts again in the same folder
        again = CliRunner().invoke(app, [*TRAIN, "--out", "run"])
    assert again.exit_code == 0, again.output
    assert Path("run/last.safetensors").is_file() and Path("run/state.safetensors").is_file()


@pytest.mark.parametrize("code", FAULTS, ids=errno.errorcode.get)
def test_the_copy_to_checkpoints_keeps_the_model_that_was_there(code, monkeypatch):
    Path("checkpoints").mkdir()
    Path("checkpoints/vae.safetensors").write_bytes(OLD)
    failing_at(monkeypatch, "vae.safetensors", code)
    assert_one_line_failure(CliRunner().invoke(app, [*TRAIN, "--out", "run"]), "vae.safetensors")
    assert Path("checkpoints/vae.safetensors").read_bytes() == OLD


@pytest.mark.parametrize("name", ["last.safetensors", "best.safetensors", "state.safetensors", "metrics.jsonl"])
@pytest.mark.parametrize("epoch", [0, 1])
def test_a_second_ctrl_c_during_a_checkpoint_write_leaves_a_folder_that_carries_on(name, epoch, monkeypatch):
    """The second Ctrl-C stops at once (a KeyboardInterrupt wherever the process is): here, in the middle of
    writing each file of a checkpoint, at the first save (epoch 0) and a later one."""
    real_replace, seen = os.replace, {"n": 0}

    def replace(source, target):
        if Path(target).name == name:
            seen["n"] += 1
            if seen["n"] == epoch + 1:
                raise KeyboardInterrupt
        return real_replace(source, target)

    with monkeypatch.context() as patch:
        patch.setattr(atomic.os, "replace", replace)
        stopped = CliRunner().invoke(app, [*TRAIN, "--out", "run"])
    assert stopped.exit_code != 0 and "Traceback" not in stopped.stderr
    assert not [path for path in Path(".").rglob("*") if atomic.TEMPORARY_NAME.match(path.name)]
    if Path("run/state.safetensors").is_file():
        again = CliRunner().invoke(app, ["train", "vae", "--resume", "run", "--epochs", "3"])
    else:
        again = CliRunner().invoke(app, [*TRAIN, "--out", "run"])
    assert again.exit_code == 0, again.output
