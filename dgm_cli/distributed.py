"""Data-parallel training under torchrun, on PyTorch's own DistributedDataParallel.

torchrun's environment alone switches it on (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT, as in nanoGPT): `torchrun --nproc-per-node N -m
dgm_cli train MODEL ...` starts N copies of the ordinary command, one per
device, joined in one process group (NCCL on CUDA, gloo on the CPU).

How the work is split, and why it computes what one process computes:
- every process holds the whole dataset and starts from the same seed, so
  all draw the same permutation each epoch and cut the same global batch
  (--batch-size stays the global batch); each trains on its contiguous rows;
- the noise a step draws per image (binarisation, reparameterisation,
  dequantisation, the GAN's latents and dropout masks) is drawn for the
  whole global batch by every process, which keeps its own rows
  (GenerativeModel.batch_noise): the processes' generators stay in step, and
  N processes draw exactly what one process would;
- DistributedDataParallel averages the gradients, each shard's loss weighted
  by its share of the batch, so the step is the global batch's mean gradient;
- validation batches are split the same way and the metric sums added over
  the processes.
The result equals a one-process run with the same global batch and seed up to
the order of floating-point sums. Two exceptions, both documented in
docs/distributed.md: batch normalisation (the GAN's generator, the metric
classifier) normalises each process's shard unless --sync-batchnorm asks for
PyTorch's SyncBatchNorm (CUDA only), and a last partial batch too small to
give every process two images is skipped.

Only rank 0 prints, locks the run folder and writes files; every rank reads a
--resume state.
"""

import gc
import os
from dataclasses import dataclass

import torch
from torch import distributed, nn

from dgm_cli.errors import DgmError
from dgm_cli.models.base import Shard

ENVIRONMENT = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Parallel:
    """This process's place among the data-parallel processes (rank 0 of 1 when not under torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, size: int) -> Shard | None:
        """This process's rows of a global batch of `size`: contiguous, sizes differing by at most one."""
        if not self.enabled:
            return None
        return Shard(
            size * self.rank // self.world_size, size * (self.rank + 1) // self.world_size, size, self.world_size
        )

    def rows(self, size: int) -> slice:
        shard = self.shard(size)
        return slice(0, size) if shard is None else slice(shard.start, shard.stop)

    def sum(self, values: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
        """The element-wise sum of every process's `values` (same keys everywhere), in one all-reduce."""
        if not self.enabled or not values:
            return values
        names = sorted(values)
        stacked = torch.stack([torch.as_tensor(values[name], dtype=torch.float64, device=device) for name in names])
        distributed.all_reduce(stacked)
        return dict(zip(names, stacked.unbind()))

    def gather(self, values: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
        """Every process's `values` side by side: name -> (world_size,) tensor (unchanged in one process)."""
        if not self.enabled:
            return values
        gathered = {}
        for name in sorted(values):
            parts = [torch.empty_like(values[name]) for _ in range(self.world_size)]
            distributed.all_gather(parts, values[name].contiguous())
            gathered[name] = torch.stack(parts)
        return gathered

    def own_share(self, value: torch.Tensor) -> torch.Tensor:
        """This process's part of a value saved by `gather` (or in one process): its own entry when the
        run is resumed on as many processes, else the whole sum on rank 0 and nothing elsewhere."""
        if value.dim() == 1 and len(value) == self.world_size:
            return value[self.rank]
        return value.sum() if self.is_main else torch.zeros_like(value.sum())

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every process when it is true on at least one."""
        if not self.enabled:
            return flag
        value = torch.tensor([float(flag)], device=device)
        distributed.all_reduce(value, op=distributed.ReduceOp.MAX)
        return bool(value.item())

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """The module made DistributedDataParallel; its parameters are broadcast from rank 0 once."""
        device_ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)

    def share_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics and the like) to every rank.

        DistributedDataParallel does this before each forward pass; done again after an epoch's last step,
        validation and the saved model use the same statistics on every rank.
        """
        if self.enabled:
            for buffer in model.buffers():
                distributed.broadcast(buffer.data, src=0)

    def check_parameters_agree(self, model: nn.Module, device: torch.device) -> None:
        """Every rank's parameters and buffers equal rank 0's, exactly (same start, same averaged gradients,
        buffers shared after each epoch)."""
        if not self.enabled:
            return
        flat = torch.cat([tensor.detach().reshape(-1).double() for tensor in model.state_dict().values()]).to(device)
        reference = flat.clone()
        distributed.broadcast(reference, src=0)
        differs = torch.tensor([float(not torch.equal(flat, reference))], device=device)
        distributed.all_reduce(differs, op=distributed.ReduceOp.MAX)
        if differs.item():
            raise DgmError("the data-parallel processes ended with different weights; please report this as a bug")


def under_torchrun() -> bool:
    return all(name in os.environ for name in ENVIRONMENT)


def start(device_name: str) -> tuple[Parallel, str]:
    """Join torchrun's process group when launched by torchrun; returns this process's place and device name.

    Under torchrun with more than one process, --device auto or cuda means cuda:LOCAL_RANK (one GPU per
    process); naming one GPU for all processes is refused.
    """
    if not under_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return Parallel(), device_name
    rank, world_size, local_rank = (int(os.environ[name]) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if device_name.startswith("cuda:"):
        raise DgmError(
            f"under torchrun each process takes GPU LOCAL_RANK; pass --device cuda (or auto), not {device_name}"
        )
    use_cuda = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise DgmError("--device cuda was asked for, but CUDA is not available on this machine; use --device cpu")
        if local_rank >= torch.cuda.device_count():
            raise DgmError(
                f"torchrun started more processes on this machine than it has GPUs ({torch.cuda.device_count()}); "
                "lower --nproc-per-node"
            )
        torch.cuda.set_device(local_rank)
        device_name = f"cuda:{local_rank}"
    elif device_name == "auto":
        device_name = "cpu"
    if not distributed.is_initialized():
        distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Parallel(rank, world_size, local_rank), device_name


def stop(*, finished: bool) -> None:
    """Leave the process group. After a normal finish the processes first wait for each other: gloo can
    abort a process whose peer tears down its connections while it is still closing its own.

    The DistributedDataParallel wrapper and its reducer sit in reference cycles, so they outlive the
    training function until the garbage collector runs; left to interpreter shutdown, gloo's worker
    threads may still hold work objects whose tensors are then freed without an interpreter, and the
    finished process dies of SIGABRT ("terminate called without an active exception"). Collecting them
    here, while everything is alive, ends the process group's users before the group itself."""
    if distributed.is_available() and distributed.is_initialized():
        gc.collect()
        if finished:
            distributed.barrier()
        distributed.destroy_process_group()
