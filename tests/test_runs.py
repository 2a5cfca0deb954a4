"""`dgm runs`: every run folder's status, read from its own files (state, lock, metrics), in a table or one JSON object."""

import json
import os
import signal
import socket
import time
from pathlib import Path

from typer.testing import CliRunner

from dgm_cli.cli import app
from dgm_cli.models.vae import VAE

TINY = ["--hidden", "8", "--zdim", "2", "--sample-epochs", "", "--dataset", "mnist-mini"]


def dgm(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def listed(*args) -> dict:
    result = dgm("runs", *args, "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)  # exactly one JSON object
    return {Path(run["path"]).name: run for run in payload["runs"]}


def test_runs_tells_finished_interrupted_diverged_and_running_apart(monkeypatch):
    assert dgm("train", "vae", "--epochs", "2", "--out", "runs/vae/done", *TINY).exit_code == 0
    assert (
        dgm(
            "train",
            "gan",
            "--epochs",
            "1",
            "--latent-dim",
            "4",
            "--sample-epochs",
            "",
            "--dataset",
            "mnist-mini",
            "--out",
            "runs/gan/g",
        ).exit_code
        == 0
    )

    healthy, calls = VAE.training_step, {"n": 0}

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 50:  # epoch 2, batch 10 (40 batches an epoch)
            os.kill(os.getpid(), signal.SIGINT)
        return healthy(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(VAE, "training_step", interrupted)
        assert dgm("train", "vae", "--epochs", "3", "--out", "runs/vae/cut", *TINY).exit_code == 130

    def diverging(self, batch, labels=None):
        metrics = healthy(self, batch, labels)
        return {**metrics, "loss": metrics["loss"] * float("nan")}

    with monkeypatch.context() as patch:
        patch.setattr(VAE, "training_step", diverging)
        assert dgm("train", "vae", "--epochs", "3", "--out", "runs/vae/nan", *TINY).exit_code == 1

    assert dgm("train", "vae", "--epochs", "4", "--out", "runs/vae/busy", *TINY).exit_code == 0
    Path("runs/vae/busy/train.lock").write_text(
        json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
    )

    runs = listed()
    assert set(runs) == {"done", "g", "cut", "nan", "busy"}
    done, cut, nan, busy, gan = runs["done"], runs["cut"], runs["nan"], runs["busy"], runs["g"]
    assert (done["status"], done["epochs_done"], done["epochs_planned"]) == ("finished", 2, 2)
    history = [json.loads(line) for line in Path("runs/vae/done/metrics.jsonl").read_text().splitlines()]
    assert done["best"] == max(r["val_elbo"] for r in history) and done["last"] == history[-1]["val_elbo"]
    assert done["train_seconds"] == round(sum(r.get("seconds", 0) for r in history), 1)
    assert done["wall_seconds"] >= done["train_seconds"]  # validation, figures and saving included
    assert (cut["status"], cut["detail"], cut["epochs_done"]) == ("interrupted", "at epoch 2, batch 10", 1)
    assert (nan["status"], nan["detail"], nan["epochs_done"]) == ("diverged", "in epoch 1", 0)
    assert busy["status"] == "running" and str(os.getpid()) in busy["detail"]
    assert gan["metric"] == "val_d_loss" and gan["best"] is None and gan["last"] is not None  # no "best" GAN epoch
    assert set(listed("--model", "gan")) == {"g"}
    assert set(listed("runs/vae")) == {"done", "cut", "nan", "busy"}


def test_the_table_goes_to_stdout_one_run_a_line():
    assert dgm("train", "vae", "--epochs", "1", "--out", "runs/vae/one", *TINY).exit_code == 0
    result = dgm("runs")
    assert result.exit_code == 0
    lines = result.stdout.strip().splitlines()
    assert lines[0].split()[:4] == ["model", "data", "epochs", "status"]
    assert lines[1].split()[:5] == ["vae", "mnist-mini", "1/1", "finished", "after"] and lines[1].endswith(
        "runs/vae/one"
    )


def test_runs_of_a_folder_that_is_not_there_or_empty():
    result = dgm("runs", "nowhere")
    assert result.exit_code == 1 and "nowhere is not a folder" in result.stderr
    Path("empty").mkdir()
    result = dgm("runs", "empty")
    assert result.exit_code == 0 and result.stdout == "" and "no training runs under empty" in result.stderr
