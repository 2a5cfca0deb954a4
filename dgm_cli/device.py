"""Turning --device into a torch.device, with errors a user can act on."""

import re

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
