"""The fast-path switches change speed, not results."""

import os

import pytest
import torch
from rich.console import Console

from dgm_cli.data import load_dataset
from dgm_cli.errors import DgmError
from dgm_cli.registry import create_config, create_model, get_spec
from dgm_cli.speed import autocast, check_precision, step_precision
from dgm_cli.trainer import RunSettings, train


def quiet() -> Console:
    return Console(file=open(os.devnull, "w"))


def test_bf16_autocast_gives_nearly_the_fp32_elbo():
    torch.manual_seed(0)
    model = create_model("vae")
    batch = load_dataset("mnist-mini", None).train.images[:256]
    torch.manual_seed(1)
    exact = model.training_step(batch)["elbo"]
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what speed.autocast does on a GPU
        reduced = model.training_step(batch)
    assert reduced["loss"].dtype == torch.float32  # losses are summed in fp32 even under autocast
    assert reduced["elbo"].item() == pytest.approx(exact.item(), rel=0.01)


def test_cpu_bf16_rounds_only_the_matrix_products_and_only_inside_a_step():
    cpu = torch.device("cpu")
    a, b = torch.randn(64, 300, generator=torch.Generator().manual_seed(0)), torch.randn(300, 50)
    with step_precision("bf16", cpu), autocast("bf16", cpu):
        inside = torch.get_float32_matmul_precision()
        product, elementwise = a @ b, torch.exp(a)
        assert not torch.is_autocast_enabled("cpu")  # tensors stay fp32; no casts around every op
    assert inside == "medium"  # oneDNN may round matmul operands to bf16 (where the CPU has bf16 units)
    assert torch.get_float32_matmul_precision() == "highest"  # validation and evaluation after the step: fp32
    assert product.dtype == elementwise.dtype == torch.float32
    torch.testing.assert_close(elementwise, torch.exp(a), rtol=0, atol=0)
    # operands rounded to bf16 (8 bits) or not at all: within bf16's rounding of the exact product
    torch.testing.assert_close(product, a @ b, rtol=0, atol=3 * 2**-8 * (a.abs() @ b.abs()).max().item())
    with step_precision("fp32", cpu):
        assert torch.get_float32_matmul_precision() == "highest"


def test_a_bf16_run_on_the_cpu_trains_the_same_model_nearly(tmp_path):
    mini = load_dataset("mnist-mini", None)
    config = create_config("vae", epochs=1, batch_size=100, sample_epochs=())
    runs = {}
    for precision in ("fp32", "bf16"):
        settings = RunSettings(
            tmp_path / precision, seed=0, device=torch.device("cpu"), checkpoint_dir=None, precision=precision
        )
        runs[precision] = train("vae", config, mini, settings, quiet())[-1]
    for name in ("train_elbo", "val_elbo", "test_elbo"):
        assert runs["bf16"][name] == pytest.approx(runs["fp32"][name], rel=0.01), name


def test_precisions_that_cannot_work_are_refused_before_anything_runs():
    with pytest.raises(DgmError, match="setting of NVIDIA GPUs"):
        check_precision("tf32", torch.device("cpu"), get_spec("vae").module_class)
    with pytest.raises(DgmError, match="trains in fp32 only"):
        check_precision("bf16", torch.device("cpu"), get_spec("flow").module_class)
    check_precision("bf16", torch.device("cpu"), get_spec("gan").module_class)


def test_a_compiled_training_step_trains_the_same_model(tmp_path):
    mini = load_dataset("mnist-mini", None)
    config = create_config("vae", hidden=16, zdim=2, epochs=1, batch_size=500, sample_epochs=())
    runs = {}
    for compiled in (False, True):
        settings = RunSettings(
            tmp_path / str(compiled), seed=0, device=torch.device("cpu"), checkpoint_dir=None, compile=compiled
        )
        runs[compiled] = train("vae", config, mini, settings, quiet())[-1]
    for name in ("train_elbo", "val_elbo", "test_elbo"):
        assert runs[True][name] == pytest.approx(runs[False][name], rel=1e-3), name


# A program run as `dgm` would be: subnormal float32 numbers (1e-39) multiplied by one, in a tensor
# large enough that PyTorch splits the work across its intra-op threads; prints the share that came out zero.
SUBNORMAL_PROBE = """
import sys
import torch
torch.set_num_threads(2)
import dgm_cli.cli as cli
def probe():
    x = torch.full((4_000_000,), 1e-39)
    print(((x * 1.0) == 0).float().mean().item())
cli.app = probe
if sys.argv[1] == "main":
    cli.main()
else:
    probe()
"""


@pytest.mark.parametrize("entry, flushed", [("main", 1.0), ("plain", 0.0)])
def test_the_dgm_process_flushes_subnormals_on_every_thread(entry, flushed):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", SUBNORMAL_PROBE, entry], capture_output=True, text=True, check=True)
    # "plain" shows the probe can tell: without dgm's main, subnormals survive arithmetic
    assert float(done.stdout.strip()) == flushed
