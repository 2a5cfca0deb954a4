"""Interrupted training: a resumed run ends exactly where an uninterrupted one does, and no kill leaves a broken file."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

from dgm_cli.atomic import TEMPORARY_NAME
from dgm_cli.checkpoint import load_checkpoint
from dgm_cli.data import load_dataset
from dgm_cli.errors import DgmError, Interrupted
from dgm_cli.registry import create_config, get_spec
from dgm_cli.state import STATE_FILE, load_state
from dgm_cli.trainer import RunSettings, train

SMALL = {
    "vae": {"hidden": 32, "zdim": 4, "epochs": 3, "batch_size": 256, "sample_epochs": (0, 3)},
    "gan": {"latent_dim": 8, "ema": 0.9, "epochs": 2, "batch_size": 256, "sample_epochs": (2,)},
    "flow": {"hidden": 16, "couplings": 2, "epochs": 2, "batch_size": 256, "sample_epochs": (2,)},
    # Conditional: the labels are drawn with the images, so a resumed run meets the same ones.
    "vae-conditional": {
        "hidden": 32,
        "zdim": 4,
        "epochs": 2,
        "batch_size": 256,
        "sample_epochs": (2,),
        "conditional": True,
    },
}
# What differs between two runs of the same computation: the clock.
TIMING = {"seconds", "images_per_second"}


@pytest.fixture(scope="module")
def mini():
    return load_dataset("mnist-mini", None)


def quiet() -> Console:
    return Console(file=open(os.devnull, "w"), force_terminal=False)


def settings(folder: Path, **changes) -> RunSettings:
    return RunSettings(out_dir=folder, seed=3, device=torch.device("cpu"), checkpoint_dir=None, **changes)


def without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in record.items() if k not in TIMING} for record in history]


def interrupt_at_step(monkeypatch, model_name: str, step: int) -> None:
    """Send this process a real SIGINT from inside training step number `step` (1-based)."""
    module_class = get_spec(model_name).module_class
    original = module_class.training_step
    calls = {"n": 0}

    def counting_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == step:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(module_class, "training_step", counting_step)


@pytest.mark.parametrize("case", ["vae", "gan", "flow", "vae-conditional"])
def test_a_run_interrupted_mid_epoch_and_resumed_is_bit_identical(case, mini, tmp_path, monkeypatch):
    model_name = case.split("-")[0]
    config = create_config(model_name, **SMALL[case])
    whole = train(model_name, config, mini, settings(tmp_path / "whole"), quiet())

    steps_per_epoch = -(-len(mini.train) // config.batch_size)
    with monkeypatch.context() as patch:
        interrupt_at_step(patch, model_name, steps_per_epoch + 3)  # in the second epoch
        with pytest.raises(Interrupted, match="--resume"):
            train(model_name, config, mini, settings(tmp_path / "cut"), quiet())
    state = load_state(tmp_path / "cut" / STATE_FILE)
    assert (state.epoch, state.position.next_batch) == (1, 3)
    assert not (tmp_path / "cut" / "train.lock").exists()
    resumed = train(model_name, config, mini, settings(tmp_path / "cut"), quiet(), resume=state)

    assert without_timing(resumed) == without_timing(whole)
    for name in ("last.safetensors", "state.safetensors"):
        expected, actual = load_file(tmp_path / "whole" / name), load_file(tmp_path / "cut" / name)
        assert expected.keys() == actual.keys()
        for key in expected:
            assert torch.equal(expected[key], actual[key]), f"{name}: {key}"


def test_resuming_at_an_epoch_boundary_with_save_every(mini, tmp_path):
    config = create_config("vae", **SMALL["vae"])
    whole = train("vae", config, mini, settings(tmp_path / "whole", save_every=2), quiet())
    assert load_state(tmp_path / "whole" / STATE_FILE).epoch == 3  # always saved at the end
    short = create_config("vae", **{**SMALL["vae"], "epochs": 2})
    train("vae", short, mini, settings(tmp_path / "cut", save_every=2), quiet())
    state = load_state(tmp_path / "cut" / STATE_FILE)
    assert state.position is None and state.epoch == 2
    resumed = train("vae", config, mini, settings(tmp_path / "cut"), quiet(), resume=state)
    # extending a finished run continues the same random stream; only the old end's test metrics differ
    assert without_timing(resumed)[3] == without_timing(whole)[3]
    assert without_timing(resumed)[1] == without_timing(whole)[1]
    expected, actual = (
        load_file(tmp_path / "whole" / "last.safetensors"),
        load_file(tmp_path / "cut" / "last.safetensors"),
    )
    assert all(torch.equal(expected[key], actual[key]) for key in expected)


def test_save_every_skips_checkpoints_between(mini, tmp_path, monkeypatch):
    import dgm_cli.trainer as trainer

    config = create_config("vae", **{**SMALL["vae"], "epochs": 3})
    seen = []
    original = trainer.save_state

    def spy(path, state):
        seen.append(state.epoch)
        original(path, state)

    monkeypatch.setattr(trainer, "save_state", spy)
    train("vae", config, mini, settings(tmp_path / "run", save_every=2), quiet())
    assert seen == [0, 2, 3, 3]  # epoch 0, every second epoch, the last, and again with the test metrics


def test_a_full_disk_stops_with_a_message_and_keeps_the_last_good_checkpoint(mini, tmp_path, monkeypatch):
    import dgm_cli.checkpoint as checkpoint

    config = create_config("vae", **SMALL["vae"])
    original = checkpoint.save_file
    writes = {"n": 0}

    def filling_disk(tensors, filename, metadata=None):
        writes["n"] += 1
        if writes["n"] > 3:  # epoch 0 (last + best) and epoch 1's last fit; then the disk is full
            with open(filename, "wb") as handle:
                handle.write(b"partial")
            raise OSError(28, "No space left on device")
        return original(tensors, filename, metadata=metadata)

    monkeypatch.setattr(checkpoint, "save_file", filling_disk)
    with pytest.raises(DgmError, match="no space left on the disk of .* MB free.*the previous version is untouched"):
        train("vae", config, mini, settings(tmp_path / "run"), quiet())
    model, info = load_checkpoint(tmp_path / "run" / "last.safetensors")
    assert info.train["epoch"] == 1
    assert not [p.name for p in (tmp_path / "run").iterdir() if ".tmp" in p.name]  # no temporary file left
    assert not (tmp_path / "run" / "train.lock").exists()


# ---------------------------------------------------------------- real processes and real signals


def launch(folder: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "DGM_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "dgm_cli", "train", "vae", *args]
    return subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


TRAIN_ARGS = (
    "--hidden",
    "64",
    "--batch-size",
    "64",
    "--dataset",
    "mnist-mini",
    "--sample-epochs",
    "0",
    "--checkpoint-dir",
    "ckpt",
)


def wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_exits_130_and_names_the_resume_command(sig, tmp_path):
    process = launch(tmp_path, "--epochs", "50", "--out", "run", *TRAIN_ARGS)
    wait_for(tmp_path / "run" / "last.safetensors")
    time.sleep(0.5)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert f"interrupted by {sig.name}" in stderr and "dgm train vae --resume run" in stderr
    assert "Traceback" not in stderr
    state = load_state(tmp_path / "run" / STATE_FILE)
    assert state.epoch < 50 and not (tmp_path / "run" / "train.lock").exists()

    resumed = launch(tmp_path, "--resume", "run", "--epochs", str(state.epoch + 1))
    _, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, stderr
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == list(range(state.epoch + 2))


def test_sigkill_at_random_moments_never_leaves_a_broken_file(tmp_path):
    rng = random.Random(0)
    first = launch(tmp_path, "--epochs", "40", "--out", "run", *TRAIN_ARGS)
    wait_for(tmp_path / "run" / STATE_FILE)
    process = first
    for _ in range(4):
        time.sleep(rng.uniform(0.2, 2.0))
        process.kill()
        process.wait()
        for path in (tmp_path / "run").glob("*.safetensors"):
            if TEMPORARY_NAME.match(path.name):
                continue  # the write the kill interrupted; what must be intact is the real file beside it
            if path.name == STATE_FILE:
                load_state(path)
            else:
                load_checkpoint(path)
        assert json.loads((tmp_path / "run" / "config.json").read_text())["model"] == "vae"
        process = launch(tmp_path, "--resume", "run")  # the dead process's lock is stale: taken over
        time.sleep(1.5)  # let it get going before the next kill
    process.kill()
    process.wait()
    state = load_state(tmp_path / "run" / STATE_FILE)
    finish = launch(tmp_path, "--resume", "run", "--epochs", str(state.epoch + 1))
    _, stderr = finish.communicate(timeout=120)
    assert finish.returncode == 0, stderr
    # a kill in the middle of a write leaves a temporary beside the intact file; the next training removes it
    assert [p.name for p in (tmp_path / "run").rglob("*") if ".tmp" in p.name] == []


def test_a_second_training_on_the_same_folder_is_refused(tmp_path):
    first = launch(tmp_path, "--epochs", "50", "--out", "run", *TRAIN_ARGS)
    wait_for(tmp_path / "run" / STATE_FILE)
    second = launch(tmp_path, "--resume", "run")
    _, stderr = second.communicate(timeout=60)
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=60)
    assert second.returncode == 1
    assert "is in use by another training (process" in stderr and "Traceback" not in stderr
    assert "resuming after" not in stderr and len(stderr.strip().splitlines()) == 1  # refused before anything is said
