"""The fast-path settings of `dgm`: subnormal flushing, torch.compile and the matmul precision.

Subnormal numbers are flushed to zero in every dgm process (docs/performance.md
measures it). --compile and --precision are off by default: --compile did not
speed up the VAE's step on our CPUs, and bf16, though faster there (1.23x for
the VAE's step, 1.14x for the GAN's), changes the arithmetic and pays only on
hardware with native bf16 matmuls, so it is the user's choice per run.
"""

from contextlib import contextmanager

import torch

from dgm_cli.errors import DgmError

PRECISIONS = ("fp32", "tf32", "bf16")


def flush_subnormals() -> None:
    """Make this process's CPU arithmetic treat subnormal floats (below 1.2e-38 in float32) as zero.

    Late in training some values drift into the subnormal range (Adam's first moments of
    weights whose gradients have all but vanished: 69% of them in the seed flow after 40
    epochs), and x86 CPUs handle each such operand in microcode, many times slower than a
    normal one: without this the seed flow's epochs slow from 31 s to 58 s on our 2-core CPU,
    the VAE's by a quarter to a half, with the same results to every printed digit
    (python benchmarks/subnormals.py, docs/performance.md). Numbers that small are far below
    anything a loss or a gradient step can resolve.

    The CPU flag is per thread and a new thread copies its creator's, so this must run
    before PyTorch starts its pool of intra-op threads: the CLI calls it first thing.
    GPUs are unaffected (CUDA kernels choose their own flushing).
    """
    torch.set_flush_denormal(True)


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
def float32_matmuls(level: str):
    """PyTorch's float32 matmul precision ("highest", "high", "medium") inside the block, restored after."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(level)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


@contextmanager
def matmul_precision(precision: str):
    """tf32 for the whole run (CUDA matmuls and convolutions); restored afterwards."""
    if precision != "tf32":
        yield
        return
    cudnn_before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = True
    try:
        with float32_matmuls("high"):
            yield
    finally:
        torch.backends.cudnn.allow_tf32 = cudnn_before


@contextmanager
def step_precision(precision: str, device: torch.device):
    """Around a whole training step (forward, backward, optimizer): bf16 matrix products on the CPU.

    With float32 matmul precision "medium", oneDNN rounds each matrix product's operands to bf16
    and accumulates in fp32, on the CPU's native bf16 units (AMX, AVX-512 BF16) where it has
    them; tensors, element-wise functions, losses and the optimizer stay fp32. That is both
    faster and closer to fp32 than autocast, which also keeps activations in bf16 and spends
    its gain on casts (python benchmarks/cpu_bf16.py measures the three; docs/performance.md).
    Validation and evaluation run outside it, in fp32. On a GPU bf16 is autocast (below).
    """
    if precision != "bf16" or device.type != "cpu":
        yield
        return
    with float32_matmuls("medium"):
        yield


def autocast(precision: str, device: torch.device):
    """bf16 autocast around a training step's forward pass on a GPU (validation always runs in fp32,
    so recorded metrics stay exact); on the CPU bf16 is step_precision's instead."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16" and device.type != "cpu")


def step_function(model, compile: bool):
    """The model's training step, compiled by torch.compile when asked (forward and backward; not the optimizer)."""
    return torch.compile(model.training_step) if compile else model.training_step
