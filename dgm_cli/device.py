"""Turning --device into a torch.device, with errors a user can act on, and naming a device in reports."""

import os
import platform
import re
from pathlib import Path

import torch

from dgm_cli.errors import DgmError

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def resolve_device(name: str) -> torch.device:
    """auto picks the first CUDA device when there is one, else the CPU."""
    if not DEVICE_PATTERN.match(name):
        raise DgmError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DgmError(f"--device {name} was asked for, but CUDA is not available on this machine; use --device cpu")
    device = torch.device(name)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise DgmError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), numbered from 0")
    return device


def describe_device(device: torch.device) -> str:
    """The device in words, for reports and benchmarks: which GPU, or which CPU with how many cores and threads."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    return f"the CPU ({cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def cpu_model() -> str:
    """The processor's name as Linux reports it (platform.processor() is often empty there)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown model"
