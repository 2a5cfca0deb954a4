"""`dgm train MODEL --init-from CKPT`: a new run that starts from a checkpoint's weights.

Through Typer's CliRunner, as a user types it; what the new run holds is checked against the file it
started from, tensor by tensor, and against the file's own SHA-256.
"""

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
from cli_calls import fails, ok  # noqa: E402

TINY_VAE = ["--hidden", "8", "--zdim", "2", "--sample-epochs", ""]
# The GAN with --ema keeps a weight average beside its live weights (as the diffusion model does); both must come over.
TINY_GAN = ["--latent-dim", "8", "--ema", "0.9", "--sample-epochs", ""]
DATA = ["--dataset", "mnist-mini", "--device", "cpu"]


def run_config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def test_a_new_run_starts_with_every_tensor_of_the_checkpoint_and_its_options():
    ok(
        "train",
        "gan",
        *TINY_GAN,
        *DATA,
        "--epochs",
        "1",
        "--batch-size",
        "500",
        "--out",
        "first",
        "--checkpoint-dir",
        "ckpt",
    )
    start = Path("ckpt/gan.safetensors")
    # --epochs 0: the new run's model is what it loaded, saved before any step.
    ok(
        "train",
        "gan",
        "--init-from",
        start,
        *DATA,
        "--epochs",
        "0",
        "--lr",
        "1e-3",
        "--out",
        "second",
        "--checkpoint-dir",
        "ckpt2",
    )
    loaded, saved = load_file(start), load_file("second/last.safetensors")
    assert loaded.keys() == saved.keys()
    for name in loaded:
        assert torch.equal(loaded[name], saved[name]), name
    # The average is its own tensors, not a copy of the live weights.
    assert not torch.equal(saved["generator_ema.0.weight"], saved["generator.0.weight"])
    recorded = run_config(Path("second"))
    # Options left out are the checkpoint's (not the defaults: latent 100, no average, batch 128); those given win.
    assert recorded["config"]["latent_dim"] == 8 and recorded["config"]["ema"] == 0.9
    assert recorded["config"]["batch_size"] == 500 and recorded["config"]["lr"] == 1e-3
    assert recorded["init_from"]["sha256"] == hashlib.sha256(start.read_bytes()).hexdigest()
    assert recorded["init_from"]["epoch"] == 1 and recorded["init_from"]["path"] == str(start.resolve())


def test_training_on_from_a_checkpoint_learns_and_a_resumed_run_keeps_where_it_started():
    ok("train", "vae", *TINY_VAE, *DATA, "--epochs", "1", "--out", "first", "--checkpoint-dir", "ckpt")
    ok(
        "train",
        "vae",
        "--init-from",
        "ckpt/vae.safetensors",
        *DATA,
        "--epochs",
        "1",
        "--out",
        "second",
        "--checkpoint-dir",
        "ckpt2",
    )
    first, second = (
        [json.loads(line) for line in Path(folder, "metrics.jsonl").read_text().splitlines()]
        for folder in ("first", "second")
    )
    # Epoch 0 of the new run is the loaded model: far from the untrained one's bound, and it learns on.
    assert second[0]["val_elbo"] > first[0]["val_elbo"] + 50
    assert second[1]["val_elbo"] > second[0]["val_elbo"]
    started = run_config(Path("second"))["init_from"]
    ok("train", "vae", "--resume", "second", "--epochs", "2")
    assert run_config(Path("second"))["init_from"] == started
    assert len(Path("second/metrics.jsonl").read_text().splitlines()) == 3


def test_weights_that_do_not_fit_are_refused_before_anything_is_written():
    ok("train", "vae", *TINY_VAE, *DATA, "--epochs", "1", "--out", "first", "--checkpoint-dir", "ckpt")
    start = "ckpt/vae.safetensors"
    fails(
        "train",
        "vae",
        "--init-from",
        start,
        "--hidden",
        "16",
        *DATA,
        "--out",
        "wider",
        message="its weights do not fit the network these options build",
    )
    assert not Path("wider").exists()
    fails("train", "gan", "--init-from", start, *DATA, "--out", "gan", message="holds a vae model, not a gan")
    fails("train", "vae", "--init-from", "missing.safetensors", *DATA, "--out", "none", message="does not exist")
    fails("train", "vae", "--resume", "first", "--init-from", start, message="leave out --init-from")
    assert not any(Path(name).exists() for name in ("gan", "none"))


def test_the_papers_initialization_takes_the_training_images_mean_and_init_from_keeps_the_checkpoints():
    from dgm_cli.data import load_dataset

    ok(
        "train",
        "vae",
        *TINY_VAE,
        *DATA,
        "--init",
        "paper",
        "--epochs",
        "0",
        "--out",
        "paper",
        "--checkpoint-dir",
        "ckpt",
    )
    mean = (load_dataset("mnist-mini").train.images.double() / 255).mean(0).flatten().clamp(0.001, 0.999)
    bias = load_file("paper/last.safetensors")["decoder.2.bias"].double()
    assert torch.allclose(bias, torch.log(mean / (1 - mean)), atol=1e-5)
    records = [json.loads(line) for line in Path("paper/metrics.jsonl").read_text().splitlines()]
    assert records[0]["val_elbo"] > -543  # the untrained model already draws the average digit, not uniform noise
    # A run that starts from a checkpoint takes all of its weights; the data do not overwrite its output bias.
    ok("train", "vae", *TINY_VAE, *DATA, "--epochs", "1", "--out", "first", "--checkpoint-dir", "ckpt2")
    ok(
        "train",
        "vae",
        "--init-from",
        "ckpt2/vae.safetensors",
        *DATA,
        "--init",
        "paper",
        "--epochs",
        "0",
        "--out",
        "second",
        "--checkpoint-dir",
        "ckpt3",
    )
    assert torch.equal(
        load_file("second/last.safetensors")["decoder.2.bias"], load_file("ckpt2/vae.safetensors")["decoder.2.bias"]
    )


@pytest.mark.parametrize(
    "model, options, prefix",
    [
        ("vae", TINY_VAE, "average."),
        ("gan", ["--latent-dim", "8", "--sample-epochs", ""], "generator_ema."),
    ],
)
def test_an_average_added_with_ema_starts_at_the_checkpoints_live_weights(model, options, prefix):
    ok(
        "train",
        model,
        *options,
        *DATA,
        "--epochs",
        "1",
        "--batch-size",
        "500",
        "--out",
        "first",
        "--checkpoint-dir",
        "ckpt",
    )
    start = load_file(f"ckpt/{model}.safetensors")
    assert not any(name.startswith(prefix) for name in start)
    ok(
        "train",
        model,
        "--init-from",
        f"ckpt/{model}.safetensors",
        "--ema",
        "0.9",
        *DATA,
        "--epochs",
        "0",
        "--out",
        "second",
        "--checkpoint-dir",
        "ckpt2",
    )
    saved = load_file("second/last.safetensors")
    averaged = {name: tensor for name, tensor in saved.items() if name.startswith(prefix)}
    assert averaged and {name: tensor for name, tensor in saved.items() if name not in averaged}.keys() == start.keys()
    live_of = (
        (lambda name: name.removeprefix(prefix))
        if model == "vae"
        else (lambda name: name.replace(prefix, "generator."))
    )
    for name, tensor in averaged.items():
        assert torch.equal(tensor, start[live_of(name)]), name
    for name in start:
        assert torch.equal(saved[name], start[name]), name
    assert run_config(Path("second"))["config"]["ema"] == 0.9
