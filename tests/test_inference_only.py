"""Inference-only checkpoints (what the model zoo ships): without the tensors only training reads, they sample
exactly as the full checkpoint does, and refuse the live weights and training on from them in one line."""

from pathlib import Path

import pytest
import torch
from conftest import invoke_dgm

import dgm_cli as dgm
from dgm_cli.checkpoint import load_checkpoint, save_checkpoint
from dgm_cli.registry import create_model


def _average_differs_from_live(model):
    with torch.no_grad():
        for _, _average, live in model.weight_averages():
            for parameter in live.parameters():
                parameter.add_(0.5)  # the live weights wander off; the average stays
    return model


@pytest.mark.parametrize(
    "name, config",
    [
        ("vae", {"hidden": 16, "ema": 0.9}),
        ("gan", {"ema": 0.9}),
        ("diffusion", {"width": 8, "timesteps": 20, "sample_steps": 5, "ema": 0.9}),
    ],
)
def test_an_inference_only_file_samples_as_the_full_checkpoint_and_refuses_the_live_weights(name, config):
    model = _average_differs_from_live(create_model(name, **config))
    save_checkpoint(Path("full.safetensors"), model, model_name=name, config=model.config, data={}, train={})
    model.save("slim.safetensors", inference_only=True)
    full, _ = load_checkpoint(Path("full.safetensors"))
    slim, info = load_checkpoint(Path("slim.safetensors"))
    assert info.inference_only and slim.inference_only and not full.inference_only
    assert set(info.shapes) == set(full.state_dict()) - full.training_only_tensors()
    options = {"steps": 3} if name == "diffusion" else {}
    assert torch.equal(full.sample(6, seed=3, **options), slim.sample(6, seed=3, **options))
    assert not torch.equal(full.sample(6, seed=3, averaged=False, **options), full.sample(6, seed=3, **options))
    with pytest.raises(dgm.DgmError, match="holds only the moving average"):
        slim.sample(2, seed=0, averaged=False, **options)
    if name == "gan":
        assert not any(key.startswith("discriminator.") for key in info.shapes)
    assert Path("slim.safetensors").stat().st_size < Path("full.safetensors").stat().st_size


def test_training_on_from_an_inference_only_file_is_refused_with_one_line():
    model = create_model("vae", hidden=16, ema=0.9)
    model.save("slim.safetensors", inference_only=True)
    result = invoke_dgm(
        "train", "vae", "--init-from", "slim.safetensors", "--dataset", "mnist-mini", "--epochs", "1", "--out", "run"
    )
    assert result.exit_code == 1 and "inference-only" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not Path("run").exists()
