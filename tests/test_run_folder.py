"""The run folder and what reopens it: checkpoints/ is never silently replaced, and --resume finds its data.

Each test follows what a user types, through Typer's CliRunner, and checks the
files the run leaves against the files it started from.
"""

import json
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

import torch

from dgm_cli.checkpoint import publish_checkpoint, read_header
from dgm_cli.data import FILES, load_dataset
from dgm_cli.models.vae import VAE

sys.path.insert(0, str(Path(__file__).parent))
from cli_calls import dgm, fails, ok  # noqa: E402

TINY = ["--hidden", "8", "--zdim", "2", "--sample-epochs", ""]


def config_of(run: str) -> dict:
    return json.loads(Path(run, "config.json").read_text())


def interrupt_in_step(monkeypatch, step: int) -> None:
    """A real SIGINT from inside the VAE's training step number `step`, as a Ctrl-C would arrive."""
    original, calls = VAE.training_step, {"n": 0}

    def stepping(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == step:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(VAE, "training_step", stepping)


def printed_resume_command(stderr: str) -> list[str]:
    """The words after 'continue with: dgm', as the interrupted run printed them."""
    line = next(line for line in stderr.splitlines() if "continue with: dgm " in line)
    return line.split("continue with: dgm ", 1)[1].split()


# ---------------------------------------------------------------- checkpoints/ keeps what it held


def test_a_training_that_would_replace_the_shipped_model_keeps_it_and_says_where():
    ok("train", "vae", "--epochs", "1", "--dataset", "mnist-mini", "--out", "long", *TINY)
    shipped = Path("checkpoints/vae.safetensors").read_bytes()
    untrained = ok("train", "vae", "--epochs", "0", "--dataset", "mnist-mini", "--out", "check", *TINY)
    assert "nothing is copied" in untrained.stderr and Path("checkpoints/vae.safetensors").read_bytes() == shipped
    assert not list(Path("checkpoints").glob("vae.*.safetensors"))  # an untrained model publishes nothing
    result = ok("train", "vae", "--epochs", "1", "--seed", "1", "--dataset", "mnist-mini", "--out", "quick", *TINY)
    kept = [path for path in Path("checkpoints").glob("vae.*.safetensors")]
    assert len(kept) == 1 and kept[0].read_bytes() == shipped  # nothing lost
    saved = read_header(kept[0]).train["saved"]  # named by its own training date
    assert kept[0].name == f"vae.{saved[:10].replace('-', '')}-{saved[11:].replace(':', '')}.safetensors"
    assert f"kept it as {kept[0]}" in result.stderr
    assert Path("checkpoints/vae.safetensors").read_bytes() == Path("quick/last.safetensors").read_bytes()


def test_publishing_the_same_model_again_keeps_no_copy_and_a_taken_name_gets_a_number(tmp_path):
    ok("train", "vae", "--epochs", "0", "--dataset", "mnist-mini", "--out", "a", "--checkpoint-dir", "none", *TINY)
    ok(
        "train",
        "vae",
        "--epochs",
        "0",
        "--dataset",
        "mnist-mini",
        "--out",
        "b",
        "--seed",
        "1",
        "--checkpoint-dir",
        "none",
        *TINY,
    )
    target = tmp_path / "ckpt" / "vae.safetensors"
    target.parent.mkdir()
    assert publish_checkpoint(Path("a/last.safetensors"), target) is None
    assert publish_checkpoint(Path("a/last.safetensors"), target) is None  # the same bytes: nothing to keep
    first = publish_checkpoint(Path("b/last.safetensors"), target)
    shutil.copy(Path("a/last.safetensors"), target)  # the same training date as the copy kept just now
    second = publish_checkpoint(Path("b/last.safetensors"), target)
    assert first.read_bytes() == second.read_bytes() == Path("a/last.safetensors").read_bytes()
    assert second.name == first.name.replace(".safetensors", "-2.safetensors")
    assert target.read_bytes() == Path("b/last.safetensors").read_bytes()


def test_a_checkpoint_dir_that_is_a_file_leaves_no_run_folder_behind():
    Path("taken").write_text("a file")
    fails(
        "train",
        "vae",
        "--epochs",
        "0",
        "--dataset",
        "mnist-mini",
        "--out",
        "run",
        "--checkpoint-dir",
        "taken",
        *TINY,
        message="cannot write to taken",
    )
    assert not Path("run").exists()


# ---------------------------------------------------------------- --resume finds its data


def test_a_fallback_run_resumes_and_extends_with_the_printed_command(monkeypatch):
    with monkeypatch.context() as patch:
        interrupt_in_step(patch, 45)  # in the second epoch (40 steps an epoch)
        cut = dgm("train", "vae", "--epochs", "2", *TINY)  # no --dataset, no data: falls back to mnist-mini
    assert cut.exit_code == 130, cut.output
    resumed = ok(*printed_resume_command(cut.stderr))
    assert "warning" in resumed.stderr and "mnist-mini" in resumed.stderr  # the fallback is said again
    run = next(Path("runs/vae").iterdir())
    ok("train", "vae", "--resume", "last", "--epochs", "3")
    details = read_header(run / "last.safetensors")
    assert details.train["epoch"] == 3 and details.data["fallback"] is True and details.data["name"] == "mnist-mini"


def test_a_run_resumes_after_the_package_moved():
    ok("train", "vae", "--epochs", "1", "--dataset", "mnist-mini", "--out", "run", *TINY)
    facts = config_of("run")
    facts["data"]["location"] = "/an/old/venv/lib/python3.11/site-packages/dgm_cli/assets/mnist-mini"
    Path("run/config.json").write_text(json.dumps(facts))
    ok("train", "vae", "--resume", "run", "--epochs", "2")


def test_a_validation_size_is_the_end_of_the_training_file_and_every_later_command_splits_the_same_way():
    default, held_out = load_dataset("mnist-mini"), load_dataset("mnist-mini", val_size=100)
    whole = torch.cat([default.train.images, default.val.images])  # the training file, in order
    assert torch.equal(held_out.val.images, whole[-100:]) and torch.equal(held_out.train.images, whole[:-100])
    assert torch.equal(held_out.test.images, default.test.images)
    ok("train", "vae", "--epochs", "1", "--dataset", "mnist-mini", "--val-size", "100", "--out", "run", *TINY)
    assert config_of("run")["data"]["val"] == 100 and read_header(Path("run/last.safetensors")).data["val"] == 100
    ok("train", "vae", "--resume", "run", "--epochs", "2")  # the recorded split is found again, not the default
    assert read_header(Path("run/last.safetensors")).data["train"] == len(whole) - 100
    for named in ([], ["--dataset", "mnist-mini"]):  # eval splits as the checkpoint was trained, named or not
        report = json.loads(
            ok(
                "eval",
                "vae",
                "run/last.safetensors",
                "--split",
                "val",
                "--iw-samples",
                "2",
                "--mc-samples",
                "0",
                "--samples",
                "0",
                "--json",
                *named,
            ).stdout
        )
        assert report["likelihood"]["images"] == 100
    fails("train", "vae", "--resume", "run", "--epochs", "3", "--val-size", "50", message="leave out --val-size")


def test_a_validation_size_that_does_not_fit_is_refused_before_anything_is_written(tmp_path):
    count = len(load_dataset("mnist-mini").train) + len(load_dataset("mnist-mini").val)
    fails(
        "train",
        "vae",
        "--epochs",
        "0",
        "--dataset",
        "mnist-mini",
        "--val-size",
        str(count),
        "--out",
        "run",
        *TINY,
        message=f"give 1 to {count - 1:,}",
    )
    assert not Path("run").exists()
    folder = tmp_path / "images"
    folder.mkdir()
    fails(
        "train",
        "vae",
        "--epochs",
        "0",
        "--dataset",
        folder,
        "--val-size",
        "10",
        "--out",
        "run2",
        *TINY,
        message="--val-size is for the named datasets",
    )


def test_data_that_really_differ_are_refused_in_one_line():
    ok("train", "vae", "--epochs", "1", "--dataset", "mnist-mini", "--out", "run", *TINY)
    facts = config_of("run")
    facts["data"]["content_md5"]["train_images"] = "0" * 32
    Path("run/config.json").write_text(json.dumps(facts))
    fails("train", "vae", "--resume", "run", "--epochs", "2", message="differ in content_md5")


def test_the_identity_of_data_is_their_contents_not_their_folder(mnist_root, tmp_path):
    copy = tmp_path / "elsewhere" / "MNIST" / "raw"
    copy.mkdir(parents=True)
    for name in FILES.values():
        shutil.copy(mnist_root / "MNIST" / "raw" / name, copy / name)
    here, there = load_dataset("mnist", mnist_root), load_dataset("mnist", tmp_path / "elsewhere")
    assert here.location != there.location and here.identity() == there.identity()
    assert there.differences(here.describe()) == []
    assert load_dataset("mnist-mini").differences(here.describe()) == ["name", "train", "val", "test", "content_md5"]
    older = {key: value for key, value in here.describe().items() if key != "content_md5"}  # before checksums were kept
    assert there.differences(older) == []


def test_a_run_started_with_data_dir_resumes_where_it_read_them_and_from_a_moved_copy(
    mnist_root, tmp_path, monkeypatch
):
    data = tmp_path / "data" / "MNIST" / "raw"
    data.mkdir(parents=True)
    for name in FILES.values():
        shutil.copy(mnist_root / "MNIST" / "raw" / name, data / name)
    args = ["--dataset", "mnist", "--data-dir", tmp_path / "data", "--batch-size", "1000", *TINY]
    with monkeypatch.context() as patch:
        interrupt_in_step(patch, 55)  # in the second epoch (50 steps an epoch)
        cut = dgm("train", "vae", "--epochs", "2", "--out", "run", *args)
    assert cut.exit_code == 130, cut.output
    ok(*printed_resume_command(cut.stderr))  # no --data-dir: the run knows where its data are
    assert read_header(Path("run/last.safetensors")).train["epoch"] == 2

    shutil.move(tmp_path / "data", tmp_path / "moved")
    result = fails("train", "vae", "--resume", "run", "--epochs", "3", message="pass --data-dir <root>")
    assert "cannot resume run" in result.stderr and "mnist was not found" in result.stderr
    ok("train", "vae", "--resume", "run", "--epochs", "3", "--data-dir", tmp_path / "moved")
    assert config_of("run")["data"]["location"] == str((tmp_path / "moved" / "MNIST" / "raw").resolve())
    assert read_header(Path("run/last.safetensors")).train["epoch"] == 3


def test_precision_and_save_every_are_recorded_and_kept_or_changed_on_resume():
    ok(
        "train",
        "vae",
        "--epochs",
        "1",
        "--dataset",
        "mnist-mini",
        "--out",
        "run",
        "--precision",
        "bf16",
        "--save-every",
        "5",
        *TINY,
    )
    assert config_of("run")["precision"] == "bf16" and config_of("run")["save_every"] == 5
    assert read_header(Path("run/last.safetensors")).train["precision"] == "bf16"
    ok("train", "vae", "--resume", "run", "--epochs", "2")
    assert read_header(Path("run/last.safetensors")).train["precision"] == "bf16"  # kept
    assert config_of("run")["save_every"] == 5  # kept too
    ok("train", "vae", "--resume", "run", "--epochs", "3", "--precision", "fp32")
    assert read_header(Path("run/last.safetensors")).train["precision"] == "fp32"  # changed, like --device
    fails("train", "vae", "--resume", "run", "--epochs", "4", "--seed", "3", message="leave out --seed")


def test_a_second_training_on_a_running_folder_is_told_it_is_in_use_not_to_resume():
    ok("train", "vae", "--epochs", "0", "--dataset", "mnist-mini", "--out", "run", *TINY)
    Path("run/train.lock").write_text(
        json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
    )
    result = fails(
        "train",
        "vae",
        "--epochs",
        "0",
        "--dataset",
        "mnist-mini",
        "--out",
        "run",
        *TINY,
        message="is in use by another training",
    )
    assert "--resume" not in result.stderr
