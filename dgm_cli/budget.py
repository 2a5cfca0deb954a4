"""Training for a wall-clock budget: what `dgm train MODEL --minutes M` changes in the loop.

A budgeted run trains until its deadline instead of for a number of epochs.
Its clock starts when the training starts (after the data are read) and counts
everything from there: steps, validations, figures, checkpoints, and the
test-split evaluation at the end. The end's cost is measured on the first
record (epoch 0 does the same figures and saves; its validation is counted at
the rate of a second, warm pass of a small batch, since the first pass of a
batch shape pays for one-time set-up), so the steps stop early enough for the
run to end on time.

What the budget lays out:
- the learning-rate schedule: `progress` is the share of the steps' time spent,
  so the configuration's warm-up and decay end at the deadline whatever the
  step time turns out to be (the flow's per-epoch decay is the preset's decay
  stretched over the budget, as the IWAE schedule is stretched over epochs);
- the weights' moving average needs nothing: its warm-up min(ema, (1 + t) / (10 + t))
  keeps its horizon within the last tenth of the steps taken, however few;
- validation: on a fixed, seeded subset of the validation split sized so that
  one pass costs about 1% of the budget, and only about every tenth of the
  budget (and always at the end); the test split at the end takes as many
  images. The sizes are recorded in epoch 0's record, under "budget".

An interrupted budgeted run resumes with the time it had left: the state keeps
the seconds spent, and the end's cost and the subset sizes are read back from
the records.
"""

import time
from dataclasses import dataclass, field

import torch

SHARE_PER_VALIDATION = 0.01  # of the budget, for one validation pass
VALIDATIONS = 10  # about this many during the run: one every tenth of the budget
FEWEST_HELD_OUT = 500  # images a validation takes however short the budget (or the whole split when smaller)
END_MARGIN = 1.25  # the end's measured cost times this, plus a second, is kept free of steps
END_SLACK_SECONDS = 1.0


@dataclass
class Budget:
    """The run's clock against its budget of `seconds`."""

    seconds: float
    spent_before: float = 0.0  # in the run's earlier processes (a resumed run)
    started: float = field(default_factory=time.perf_counter)
    end_seconds: float = 0.0  # kept free of steps for the final validation, test and saves
    steps_from: float = 0.0  # spent() at the first step, after epoch 0's record
    last_validation: float = 0.0  # spent() when the latest validation ended

    def spent(self) -> float:
        return self.spent_before + time.perf_counter() - self.started

    def steps_until(self) -> float:
        """spent() at which the steps stop."""
        return max(0.0, self.seconds - self.end_seconds)

    def progress(self) -> float:
        """The share of the steps' time spent, from the first step to the steps' deadline: what the
        learning-rate schedule reads (0 to 1)."""
        span = self.steps_until() - self.steps_from
        return 1.0 if span <= 0 else min(1.0, max(0.0, self.spent() - self.steps_from) / span)

    def steps_over(self) -> bool:
        return self.spent() >= self.steps_until()

    def validation_due(self) -> bool:
        return self.spent() - self.last_validation >= self.seconds / VALIDATIONS

    def plan_end(self, record_seconds: float, validation_seconds: float, test_share: float) -> None:
        """Keep time for the end: one more record like epoch 0's (validation, figures, saves, taking
        `record_seconds`) and the test split's evaluation (`test_share` of a validation's images)."""
        measured = record_seconds + validation_seconds * test_share
        self.end_seconds = END_MARGIN * measured + END_SLACK_SECONDS
        self.steps_from = self.spent()


def held_out_size(available: int, seconds_per_image: float, budget_seconds: float) -> int:
    """How many held-out images one validation takes: about SHARE_PER_VALIDATION of the budget's worth,
    in hundreds, at least FEWEST_HELD_OUT (or all there are)."""
    affordable = int(SHARE_PER_VALIDATION * budget_seconds / max(seconds_per_image, 1e-9)) // 100 * 100
    return min(available, max(FEWEST_HELD_OUT, affordable))


def seeded_subset(images: torch.Tensor, labels: torch.Tensor, size: int, seed: int):
    """The first `size` images of a seeded permutation, in the split's order, on a generator of their own (the
    run's random streams are untouched); the whole split when `size` covers it."""
    if size >= len(images):
        return images, labels
    chosen = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:size].sort().values
    chosen = chosen.to(images.device)
    return images[chosen], labels[chosen]
