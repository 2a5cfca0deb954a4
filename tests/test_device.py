"""What must hold on whatever device trains: the tests benchmarks/gpu_check.py runs on a GPU.

They run on $DGM_TEST_DEVICE (default cpu, as in CI), so every one of them is
exercised here too; on a CUDA device they check what only a GPU can break:
kernels that differ from the CPU's, device-resident data and generators, the
CUDA generator state in a resume, tf32 and bf16 autocast, and checkpoints
written from GPU tensors and read on the CPU.
"""

import os
from pathlib import Path

import pytest
import torch
from rich.console import Console

from dgm_cli.checkpoint import load_checkpoint
from dgm_cli.data import Dataset, Split, load_dataset
from dgm_cli.errors import Interrupted
from dgm_cli.estimators import evaluate_images, validate
from dgm_cli.registry import create_config, get_spec
from dgm_cli.sampling import sample_images
from dgm_cli.speed import PRECISIONS, check_precision
from dgm_cli.state import STATE_FILE, load_state
from dgm_cli.trainer import RunSettings, train

DEVICE = torch.device(os.environ.get("DGM_TEST_DEVICE", "cpu"))
ON_CUDA = DEVICE.type == "cuda"
if ON_CUDA and not torch.cuda.is_available():
    pytest.skip(f"DGM_TEST_DEVICE={DEVICE} but CUDA is not available", allow_module_level=True)

TINY = {
    "vae": {"hidden": 32, "zdim": 4, "epochs": 2, "batch_size": 200, "sample_epochs": (2,)},
    "gan": {"latent_dim": 8, "ema": 0.9, "epochs": 2, "batch_size": 200, "sample_epochs": (2,)},
    "flow": {"hidden": 16, "couplings": 2, "epochs": 2, "batch_size": 200, "sample_epochs": (2,)},
    "flow-ms": {"arch": "realnvp-ms", "steps": 1, "channels": 8, "epochs": 2, "batch_size": 200, "sample_epochs": (2,)},
}
TIMING = {"seconds", "images_per_second"}


@pytest.fixture(scope="module")
def small_data() -> Dataset:
    """2,000 training images of the bundled subset: enough for ten steps an epoch, quick on a CPU."""
    mini = load_dataset("mnist-mini", None)
    cut = lambda split, n: Split(split.images[:n], split.labels[:n])  # noqa: E731
    return Dataset(
        "mnist-mini",
        cut(mini.train, 2000),
        cut(mini.val, 400),
        cut(mini.test, 400),
        mini.location,
        content_md5=mini.content_md5,
    )


def quiet() -> Console:
    return Console(file=open(os.devnull, "w"), force_terminal=False)


def model_of(name: str) -> str:
    return name.split("-")[0]


def run_settings(folder: Path, **changes) -> RunSettings:
    return RunSettings(out_dir=folder, seed=5, device=DEVICE, checkpoint_dir=None, **changes)


@pytest.mark.parametrize("name", list(TINY))
def test_training_on_the_device_gives_a_checkpoint_the_cpu_reads_to_the_same_numbers(name, small_data, tmp_path):
    model_name = model_of(name)
    history = train(
        model_name, create_config(model_name, **TINY[name]), small_data, run_settings(tmp_path / name), quiet()
    )
    assert all(torch.isfinite(torch.tensor(v)) for v in history[-1].values() if isinstance(v, float))
    model, info = load_checkpoint(tmp_path / name / "last.safetensors", device="cpu")
    assert info.train["device"] == str(DEVICE)
    assert all(tensor.device.type == "cpu" for tensor in model.state_dict().values())
    # The validation numbers the device recorded, recomputed on the CPU from the saved weights.
    val = model.prepare_split(small_data.val.images, train=False, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(0)
    again = validate(model, val, small_data.val.labels, prefix="val_")
    recorded = {key: value for key, value in history[-1].items() if key.startswith("val_")}
    # The VAE's validation ELBO draws one reparameterised sample per image and the flow one dequantization
    # draw: other draws than the device's, so only close; the GAN's numbers are deterministic.
    tolerance = {"vae": 2e-2, "flow": 2e-3, "gan": 1e-4}[model_name]
    for key, value in recorded.items():
        assert again[key] == pytest.approx(value, rel=tolerance, abs=1e-3), key


@pytest.mark.parametrize("name", ["vae", "gan", "flow"])
def test_a_run_interrupted_and_resumed_on_the_device_ends_where_an_uninterrupted_one_does(
    name, small_data, tmp_path, monkeypatch
):
    model_name = model_of(name)
    config = create_config(model_name, **TINY[name])
    whole = train(model_name, config, small_data, run_settings(tmp_path / "whole"), quiet())
    module_class = get_spec(model_name).module_class
    original, calls = module_class.training_step, {"n": 0}

    def interrupting(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 13:  # in the second epoch
            import signal

            os.kill(os.getpid(), signal.SIGINT)
        return original(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(module_class, "training_step", interrupting)
        with pytest.raises(Interrupted):
            train(model_name, config, small_data, run_settings(tmp_path / "cut"), quiet())
    state = load_state(tmp_path / "cut" / STATE_FILE)
    assert state.position is not None and ("rng.cuda" in state.rng) == ON_CUDA
    resumed = train(model_name, config, small_data, run_settings(tmp_path / "cut"), quiet(), resume=state)
    for expected, actual in zip(whole, resumed, strict=True):
        for key in expected.keys() - TIMING:
            # CUDA kernels may add in another order from run to run; the CPU is bit-identical.
            assert actual[key] == (pytest.approx(expected[key], rel=1e-4) if ON_CUDA else expected[key]), key


@pytest.mark.parametrize("precision", PRECISIONS)
def test_each_precision_the_device_allows_trains_the_vae_to_fp32s_numbers(precision, small_data, tmp_path):
    vae = get_spec("vae").module_class
    try:
        check_precision(precision, DEVICE, vae)
    except Exception as refusal:
        pytest.skip(f"{precision} is not offered on {DEVICE}: {refusal}")
    config = create_config("vae", **{**TINY["vae"], "sample_epochs": ()})
    exact = train("vae", config, small_data, run_settings(tmp_path / "fp32"), quiet())
    reduced = train("vae", config, small_data, run_settings(tmp_path / f"in-{precision}", precision=precision), quiet())
    for key in ("train_elbo", "val_elbo", "test_elbo"):
        assert reduced[-1][key] == pytest.approx(exact[-1][key], rel=1e-2), key


@pytest.mark.parametrize("name", ["vae", "gan", "flow"])
def test_seeded_samples_on_the_device_match_the_cpus(name, small_data, tmp_path):
    model_name = model_of(name)
    train(
        model_name,
        create_config(model_name, **{**TINY[name], "epochs": 1}),
        small_data,
        run_settings(tmp_path / "r"),
        quiet(),
    )
    on_device, _ = load_checkpoint(tmp_path / "r" / "last.safetensors", device=DEVICE)
    on_cpu, _ = load_checkpoint(tmp_path / "r" / "last.safetensors", device="cpu")
    a, b = sample_images(on_device, 16, seed=3), sample_images(on_cpu, 16, seed=3)
    assert a.min() >= 0 and a.max() <= 1
    assert torch.allclose(a.cpu(), b.cpu(), atol=1e-3), (a.cpu() - b.cpu()).abs().max()


def test_the_vae_likelihood_estimators_agree_between_the_device_and_the_cpu(small_data, tmp_path):
    train(
        "vae", create_config("vae", **{**TINY["vae"], "epochs": 1}), small_data, run_settings(tmp_path / "r"), quiet()
    )
    images = small_data.test.images[:50]
    estimates = {}
    for device in {DEVICE, torch.device("cpu")}:
        model, _ = load_checkpoint(tmp_path / "r" / "last.safetensors", device=device)
        estimates[device.type] = evaluate_images(model, images, seed=1, iw_samples=64, mc_samples=64)
    for name, estimate in estimates[DEVICE.type].items():
        reference = estimates["cpu"][name].summary()["nats"]
        assert estimate.summary()["nats"] == pytest.approx(reference, rel=1e-3), name
