"""Learning-rate schedules: the share of a model's configured rate at each point of its training.

`progress` runs from 0 at the first step to 1 at the end, so a schedule keeps
its shape when a run has more or fewer epochs than its paper:
    constant  1 throughout
    cosine    half a cosine from 1 to 0
    iwae      Burda et al.'s stages: stage i = 0..7 lasts 3^i of their 3,280 epochs (its share of the run
              here) at 10^(-i/7) of the rate, from 1e-3 down to 1e-4 with the paper's rate
    exponential  decay^e in epoch e = 0, 1, ... (PyTorch's ExponentialLR stepped once per epoch); it
              needs the run's epochs, as it is tied to epochs rather than to the share of the run
"""

import math

SCHEDULES = ("constant", "cosine", "iwae", "exponential")
IWAE_STAGES = 8
IWAE_EPOCHS = (3**IWAE_STAGES - 1) // 2  # 3,280 = 1 + 3 + ... + 3^7


def iwae_stage(progress: float) -> int:
    """The stage i in which `progress` lies: stage i starts at (3^i - 1) / 2 of the paper's 3,280 epochs."""
    epoch = progress * IWAE_EPOCHS
    stage = 0
    while stage + 1 < IWAE_STAGES and epoch >= (3 ** (stage + 1) - 1) / 2:
        stage += 1
    return stage


def learning_rate_factor(schedule: str, progress: float, *, epochs: int = 1, decay: float = 1.0) -> float:
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "iwae":
        return 10 ** (-iwae_stage(progress) / 7)
    if schedule == "exponential":
        # the epoch in which `progress` lies; the small tolerance keeps an epoch's first step, whose
        # progress e/epochs may round just below it, in epoch e
        return decay ** min(math.floor(progress * epochs + 1e-9), epochs - 1)
    raise ValueError(f"unknown learning-rate schedule {schedule!r}; use one of {', '.join(SCHEDULES)}")
