"""Corrupted or broken weights are refused, never sampled or evaluated into NaN: checkpoints carry the SHA-256
of their tensors, checked on every load; files from before it load with a warning; NaN weights, NaN estimates
and NaN samples are one-line errors that say where they came from."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import REPO, invoke_dgm
from safetensors import safe_open

import dgm_cli as dgm
from dgm_cli.checkpoint import read_header
from dgm_cli.registry import create_model
from dgm_cli.zoo import find


def one_line_error(result, message: str):
    assert result.exit_code == 1, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_the_digest_is_the_tensors_sha256_and_every_shipped_model_carries_it():
    path = Path("vae.safetensors")
    create_model("vae", hidden=8).save(path)
    digest = hashlib.sha256()
    with safe_open(str(path), framework="pt") as handle:  # recomputed from the file, independently of dgm's code
        for name in sorted(handle.keys()):
            tensor = handle.get_tensor(name).contiguous()
            digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    assert read_header(path).sha256 == digest.hexdigest()
    assert all(read_header(find(name).path).sha256 for name in ("vae", "gan", "flow", "diffusion"))


def test_overwritten_tensor_bytes_are_refused_by_sample_and_eval():
    path = Path("vae.safetensors")
    shutil.copy(find("vae").path, path)
    with open(path, "r+b") as handle:  # 64 KB of 0xFF in the middle of the tensor data, as a bad disk would
        handle.seek(path.stat().st_size // 2)
        handle.write(b"\xff" * 65536)
    one_line_error(invoke_dgm("sample", "vae", path, "--out", "s.png"), "is corrupted")
    one_line_error(invoke_dgm("eval", "vae", path, "--dataset", "mnist-mini", "--limit", "5"), "is corrupted")
    assert not Path("s.png").exists()


def test_a_file_from_before_the_digest_loads_with_a_warning():
    old = REPO / "tests" / "fixtures" / "vae-before-conditional.safetensors"
    assert read_header(old).sha256 is None
    result = invoke_dgm("sample", "vae", old, "-n", "4", "--out", "s.png")
    assert result.exit_code == 0, result.output
    assert "cannot be verified" in result.stderr and Path("s.png").is_file()


def test_nan_weights_estimates_and_samples_are_errors_not_numbers():
    model = create_model("vae", hidden=8)
    with torch.no_grad():
        model.decoder[-1].bias[0] = float("nan")
    model.save("nan.safetensors")  # a diverged run's weights: the digest matches, the values are broken
    one_line_error(invoke_dgm("sample", "vae", "nan.safetensors", "--out", "s.png"), "NaN or infinite weights")
    with pytest.raises(dgm.DgmError, match="is not finite for 5 of 5 images"):
        dgm.evaluate(model, "mnist-mini", limit=5, iw_samples=4, mc_samples=0, samples=0)
    with pytest.raises(dgm.DgmError, match="NaN or infinite pixels"):
        dgm.evaluate(model, "mnist-mini", limit=5, iw_samples=0, mc_samples=0, samples=20)
    report = dgm.evaluate(create_model("vae", hidden=8), "mnist-mini", limit=5, iw_samples=4, mc_samples=0, samples=0)
    assert json.dumps(report.to_dict(), allow_nan=False)  # a healthy model's report holds no NaN


def test_a_training_state_whose_bytes_changed_is_not_resumed():
    trained = invoke_dgm("train", "vae", "--epochs", "1", "--hidden", "64", "--dataset", "mnist-mini", "--out", "run")
    assert trained.exit_code == 0, trained.output
    state = Path("run/state.safetensors")
    with open(state, "r+b") as handle:
        handle.seek(state.stat().st_size // 2)
        handle.write(b"\xff" * 4096)
    one_line_error(invoke_dgm("train", "vae", "--resume", "run", "--epochs", "2"), "is corrupted")
