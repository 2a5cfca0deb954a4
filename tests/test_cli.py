"""Every command through Typer's CliRunner, on the bundled subset, plus the errors users will meet."""

import json
import subprocess
import sys
from pathlib import Path

import numpy
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dgm_cli import __version__
from dgm_cli.cli import app

runner = CliRunner()


def dgm(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def ok(*args: str):
    result = dgm(*args)
    assert result.exit_code == 0, result.output
    return result


def fails(code: int, *args: str, message: str):
    result = dgm(*args)
    assert result.exit_code == code, result.output
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.output
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short zdim-2 run shared by the tests that only read its outputs."""
    folder = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        result = ok(
            "train",
            "vae",
            "--zdim",
            "2",
            "--epochs",
            "2",
            "--dataset",
            "mnist-mini",
            "--out",
            "run",
            "--sample-epochs",
            "0,2",
            "--device",
            "cpu",
            "--json",
        )
    return folder, json.loads(result.stdout)


def test_version_and_help():
    assert ok("--version").stdout.strip() == f"dgm {__version__}"
    for command in ("sample", "manifold", "eval", "info", "models", "train"):
        assert command in ok("--help").stdout
    assert "--zdim" in ok("train", "vae", "--help").stdout
    for command in (["sample"], ["eval"], ["interpolate"], ["train", "flow"], ["reproduce"]):
        # a flag takes no value: --binary, not --binary true (Typer's own --help line keeps its <bool>)
        lines = ok(*command, "--help").stdout.splitlines()
        assert not [line for line in lines if "<bool>" in line and "--help" not in line]


def test_python_dash_m_runs_the_same_app():
    result = subprocess.run([sys.executable, "-m", "dgm_cli", "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == f"dgm {__version__}"


def test_models_lists_the_registry():
    payload = json.loads(ok("models", "--json").stdout)
    vae = next(entry for entry in payload["models"] if entry["name"] == "vae")
    assert vae["config"]["zdim"] == 20 and vae["config"]["epochs"] == 40
    assert "manifold" in vae["capabilities"]


def test_training_writes_the_whole_run_folder(trained):
    folder, summary = trained
    run = folder / "run"
    for name in ("config.json", "metrics.jsonl", "curves.png", "last.safetensors", "best.safetensors"):
        assert (run / name).is_file(), name
    for name in (
        "samples/epoch_000.png",
        "samples/epoch_002.png",
        "samples/epoch_002_binary.png",
        "manifold/epoch_000.png",
        "manifold/epoch_002.png",
    ):
        assert (run / name).is_file(), name
    assert (folder / "checkpoints" / "vae.safetensors").read_bytes() == (run / "last.safetensors").read_bytes()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1, 2]
    assert records[0]["val_elbo"] == pytest.approx(-543.4, abs=1.0)  # uniform Bernoulli decoder at init
    assert records[2]["val_elbo"] > records[0]["val_elbo"] + 200
    assert summary["final"] == records[-1] and summary["data"]["name"] == "mnist-mini"
    best_epoch = max(records, key=lambda r: r["val_elbo"])["epoch"]
    best = json.loads(ok("info", run / "best.safetensors", "--json").stdout)
    assert best["train"]["epoch"] == best_epoch
    assert not list(run.rglob("*.tmp*"))


def test_info_shows_the_checkpoint_metadata(trained):
    folder, _ = trained
    details = json.loads(ok("info", folder / "run" / "last.safetensors", "--json").stdout)
    assert details["model"] == "vae" and details["config"]["zdim"] == 2
    assert details["data"]["name"] == "mnist-mini" and details["data"]["fallback"] is False
    assert details["train"]["epoch"] == 2 and details["train"]["seed"] == 0
    assert "val_elbo" in details["train"]["metrics"]
    assert "vae model" in ok("info", folder / "run" / "last.safetensors").stdout  # the result, on stdout


def test_sample_writes_a_grid_and_binary_draws(trained, tmp_path):
    folder, _ = trained
    checkpoint = folder / "run" / "last.safetensors"
    ok("sample", "vae", checkpoint, "-n", "16", "--out", tmp_path / "s.png", "--seed", "3")
    image = Image.open(tmp_path / "s.png")
    assert image.size == ((4 * 30 + 2) * 2, (4 * 30 + 2) * 2)  # 4x4 digits of 28 px, 2 px gaps, drawn at 2x
    ok("sample", "vae", checkpoint, "-n", "16", "--out", tmp_path / "again.png", "--seed", "3")
    assert (tmp_path / "s.png").read_bytes() == (tmp_path / "again.png").read_bytes()
    ok("sample", "vae", checkpoint, "-n", "8", "--nrow", "8", "--binary", "--out", tmp_path / "b.png")
    pixels = numpy.asarray(Image.open(tmp_path / "b.png"))
    assert set(numpy.unique(pixels).tolist()) <= {0, 255}


def test_default_checkpoint_comes_from_checkpoints_folder(trained, monkeypatch):
    folder, _ = trained
    monkeypatch.chdir(folder)
    ok("sample", "vae", "-n", "4", "--out", "default.png")
    assert (folder / "default.png").is_file()


def test_manifold_and_its_error_for_other_latent_sizes(trained, tmp_path):
    folder, _ = trained
    ok("manifold", "vae", folder / "run" / "last.safetensors", "--grid", "5", "--out", tmp_path / "m.png")
    assert Image.open(tmp_path / "m.png").size == ((5 * 30 + 2) * 2,) * 2
    ok("train", "vae", "--zdim", "3", "--hidden", "8", "--epochs", "0", "--dataset", "mnist-mini", "--out", "z3")
    fails(1, "manifold", "vae", "z3/last.safetensors", message="train one with --zdim 2")


def test_eval_reports_all_three_estimators(trained):
    folder, _ = trained
    result = ok(
        "eval",
        "vae",
        folder / "run" / "best.safetensors",
        "--limit",
        "40",
        "--iw-samples",
        "64",
        "--mc-samples",
        "64",
        "--samples",
        "0",
        "--json",
        "--device",
        "cpu",
    )
    report = json.loads(result.stdout)
    assert report["dataset"] == "mnist-mini" and report["split"] == "test"
    assert "sample_quality" not in report
    likelihood = report["likelihood"]
    assert likelihood["images"] == 40
    assert likelihood["importance_weighted"]["nats"] >= likelihood["elbo"]["nats"]
    assert likelihood["prior_monte_carlo"]["nats"] < likelihood["importance_weighted"]["nats"]
    assert likelihood["prior_monte_carlo"]["mean_ess"] < likelihood["importance_weighted"]["mean_ess"]
    for name in ("elbo", "importance_weighted", "prior_monte_carlo"):
        estimate = likelihood[name]
        assert estimate["bits_per_dim"] == pytest.approx(-estimate["nats"] / (784 * 0.6931471805599453))
    for words in ("importance-weighted", "prior Monte-Carlo", "bits/dim"):
        assert words in result.stderr
    again = json.loads(
        ok(
            "eval",
            "vae",
            folder / "run" / "best.safetensors",
            "--limit",
            "40",
            "--iw-samples",
            "64",
            "--mc-samples",
            "0",
            "--samples",
            "0",
            "--json",
        ).stdout
    )
    assert "prior_monte_carlo" not in again["likelihood"]
    assert again["likelihood"]["importance_weighted"] == likelihood["importance_weighted"]  # seeded
    fails(
        1,
        "eval",
        "vae",
        folder / "run" / "best.safetensors",
        "--iw-samples",
        "0",
        "--samples",
        "0",
        message="nothing to evaluate",
    )


def test_training_without_a_dataset_falls_back_with_a_warning_and_records_it():
    result = ok("train", "vae", "--epochs", "0", "--hidden", "8", "--out", "fb")
    assert "warning" in result.stderr and "mnist-mini" in result.stderr
    done = next(line for line in result.stderr.splitlines() if line.startswith("done: "))
    assert "bundled mnist-mini subset: not comparable" in done  # the last line says it too, not only a warning
    details = json.loads(ok("info", "fb/last.safetensors", "--json").stdout)
    assert details["data"]["fallback"] is True and details["data"]["name"] == "mnist-mini"
    assert "warning: trained on the bundled mnist-mini subset" in ok("info", "fb/last.safetensors").stderr


def test_a_second_ctrl_c_still_says_how_to_continue(monkeypatch):
    """The second signal stops at once, without saving: the state of the last save is what --resume continues."""

    def killed_twice(model_name, config, dataset, settings, console, resume=None):
        settings.out_dir.mkdir(parents=True)
        (settings.out_dir / "state.safetensors").write_bytes(b"saved at the end of an earlier epoch")
        raise KeyboardInterrupt

    monkeypatch.setattr("dgm_cli.trainer.train", killed_twice)
    result = dgm("train", "vae", "--epochs", "1", "--hidden", "8", "--dataset", "mnist-mini", "--out", "twice")
    assert result.exit_code == 130
    assert "continue with: dgm train vae --resume twice" in result.stderr and "Traceback" not in result.output


def test_static_binarization_trains(tmp_path):
    ok(
        "train",
        "vae",
        "--epochs",
        "1",
        "--hidden",
        "16",
        "--binarize",
        "static",
        "--dataset",
        "mnist-mini",
        "--out",
        "st",
        "--sample-epochs",
        "",
    )
    assert json.loads(ok("info", "st/last.safetensors", "--json").stdout)["config"]["binarize"] == "static"
    assert not Path("st/samples").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "vae", "--epochs", "-1"], "Invalid value"),
        (["train", "vae", "--zdim", "0"], "Invalid value"),
        (["train", "vae", "--batch-size", "0"], "Invalid value"),
        (["train", "vae", "--lr", "0"], "Invalid value"),
        (["train", "vae", "--binarize", "sometimes"], "Invalid value"),
        (["train", "vae", "--sample-epochs", "1,x"], "comma-separated whole numbers"),
        (["train", "vae", "--device", "tpu"], "not a device"),
        (["train", "vqvae"], "No such command"),
        (["sample", "vae", "-n", "0"], "Invalid value"),
        (["sample", "vqvae"], "Invalid value"),
        (["sample", "vae-zdim3"], "dgm models --pretrained"),
        (["manifold", "vae", "--grid", "1"], "Invalid value"),
        (["eval", "vae", "--iw-samples", "-1"], "Invalid value"),
        (["eval", "vae", "--samples", "-5"], "Invalid value"),
        (["interpolate", "vae", "--classes", "3,x"], "two digits"),
        (["interpolate", "vae", "--method", "cubic"], "Invalid value"),
        (["eval", "vae", "--split", "dev"], "Invalid value"),
    ],
)
def test_usage_errors_exit_2(args, message):
    fails(2, *args, message=message)


def test_runtime_errors_exit_1_with_one_line(tmp_path):
    fails(1, "sample", "vae", tmp_path / "nope.safetensors", message="does not exist")
    (tmp_path / "junk.safetensors").write_bytes(b"\x80\x04junk" * 10)
    result = fails(1, "info", tmp_path / "junk.safetensors", message="not a readable safetensors checkpoint")
    assert len(result.stderr.strip().splitlines()) == 1
    fails(1, "train", "vae", "--dataset", "mnist", "--epochs", "0", message="t10k-labels-idx1-ubyte.gz")
    assert not Path("runs").exists()  # nothing is created for a run that cannot start
    Path("blocker").write_text("a file where a folder should be")
    fails(
        1,
        "train",
        "vae",
        "--epochs",
        "0",
        "--dataset",
        "mnist-mini",
        "--out",
        "blocker/run",
        message="cannot write to blocker/run",
    )
    fails(1, "sample", "vae", tmp_path / "junk.safetensors", "--out", "x.png", message="not a readable")
    assert not Path("x.png").exists()


def test_an_existing_run_is_never_overwritten():
    ok("train", "vae", "--epochs", "0", "--hidden", "8", "--dataset", "mnist-mini", "--out", "once")
    before = Path("once/last.safetensors").read_bytes()
    fails(1, "train", "vae", "--epochs", "0", "--dataset", "mnist-mini", "--out", "once", message="already holds")
    assert Path("once/last.safetensors").read_bytes() == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    fails(1, "train", "vae", "--device", "cuda", "--dataset", "mnist-mini", message="CUDA is not available")


def test_debug_shows_the_traceback():
    result = dgm("--debug", "sample", "vae", "nope.safetensors")
    assert result.exit_code != 0 and result.exception is not None


def test_a_download_error_with_brackets_is_printed_verbatim(monkeypatch):
    from dgm_cli import data

    monkeypatch.setattr(data, "download", lambda source, root: "<urlopen error [Errno -2] Name or service not known>")
    result = ok("train", "vae", "--epochs", "0", "--hidden", "8", "--out", "offline")
    assert "[Errno -2] Name or service not known" in result.stderr
    assert "training on the bundled mnist-mini subset" in result.stderr


def test_a_diverging_run_stops_and_keeps_the_last_good_checkpoint(monkeypatch):
    from dgm_cli.models.vae import VAE

    healthy = VAE.training_step

    def diverging(self, batch, labels=None):
        metrics = healthy(self, batch, labels)
        return {**metrics, "loss": metrics["loss"] * float("nan")}

    monkeypatch.setattr(VAE, "training_step", diverging)
    fails(
        1,
        "train",
        "vae",
        "--epochs",
        "2",
        "--hidden",
        "8",
        "--dataset",
        "mnist-mini",
        "--out",
        "nan",
        message="training diverged in epoch 1",
    )
    assert json.loads(ok("info", "nan/last.safetensors", "--json").stdout)["train"]["epoch"] == 0
    assert not Path("checkpoints/vae.safetensors").exists()


def test_results_go_to_stdout_and_progress_to_stderr(trained):
    folder, _ = trained
    checkpoint = folder / "run" / "best.safetensors"
    result = ok("eval", "vae", checkpoint, "--limit", "20", "--iw-samples", "8", "--mc-samples", "0", "--samples", "0")
    assert "importance-weighted" in result.stdout and "bits/dim" in result.stdout  # `dgm eval vae > results.txt`
    assert "importance-weighted" not in result.stderr
    as_json = ok(
        "eval", "vae", checkpoint, "--limit", "20", "--iw-samples", "8", "--mc-samples", "0", "--samples", "0", "--json"
    )
    assert json.loads(as_json.stdout)["likelihood"]["images"] == 20  # stdout is exactly one JSON object
    assert "importance-weighted" in as_json.stderr  # the tables move to stderr
    assert "vae " in ok("models").stdout  # `dgm models | grep vae`


def test_a_run_folder_stands_for_its_best_checkpoint(trained, tmp_path):
    folder, _ = trained
    run = folder / "run"
    result = ok("sample", "vae", run, "-n", "4", "--out", tmp_path / "s.png", "--seed", "3")
    assert f"using {run / 'best.safetensors'}" in result.stderr
    ok("sample", "vae", run / "best.safetensors", "-n", "4", "--out", tmp_path / "t.png", "--seed", "3")
    assert (tmp_path / "s.png").read_bytes() == (tmp_path / "t.png").read_bytes()
    assert json.loads(ok("info", run, "--json").stdout)["path"] == str(run / "best.safetensors")
    fails(
        1,
        "sample",
        "vae",
        tmp_path,
        "--out",
        tmp_path / "u.png",
        message="without best.safetensors or last.safetensors",
    )


def test_a_row_longer_than_the_images_is_clipped_to_them(trained, tmp_path):
    folder, _ = trained
    ok("sample", "vae", folder / "run" / "last.safetensors", "-n", "4", "--nrow", "100", "--out", tmp_path / "row.png")
    assert Image.open(tmp_path / "row.png").size == ((4 * 30 + 2) * 2, (30 + 2) * 2)  # one row of 4, not of 100
