"""The fast-path switches of `dgm train`: torch.compile and the matmul precision.

Both are off by default (docs/performance.md has the measurements and the
commands): --compile did not speed up the VAE's step on our CPU, and bf16,
though about 1.3-1.5x faster there for the VAE, changes
the arithmetic and pays only on hardware with native bf16 matmuls, so it is
the user's choice per run.
"""

from contextlib import contextmanager

import torch

from dgm_cli.errors import DgmError

PRECISIONS = ("fp32", "tf32", "bf16")


def check_precision(precision: str, device: torch.device, model_class) -> None:
    if precision not in PRECISIONS:
        raise DgmError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "tf32" and device.type != "cuda":
        raise DgmError("--precision tf32 is a setting of NVIDIA GPUs; on the CPU use fp32 or bf16")
    if precision == "bf16" and not model_class.reduced_precision:
        raise DgmError(
            f"the {model_class.__name__.lower()} trains in fp32 only: its log-determinants sum hundreds of "
            "terms that bf16's 8-bit mantissa would swamp; leave out --precision"
        )


@contextmanager
def matmul_precision(precision: str):
    """tf32 for the whole run (CUDA matmuls and convolutions); restored afterwards."""
    if precision != "tf32":
        yield
        return
    before = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]


def autocast(precision: str, device: torch.device):
    """bf16 autocast around a training step (validation always runs in fp32, so recorded metrics stay exact)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def step_function(model, compile: bool):
    """The model's training step, compiled by torch.compile when asked (forward and backward; not the optimizer)."""
    return torch.compile(model.training_step) if compile else model.training_step
