"""The one training loop, for every registered model.

Read it top to bottom: set up, then per epoch (shuffle, steps, validation,
record, checkpoints, figures), then the test-split metrics of the final model
and the copy to checkpoints/. The whole split
sits on the training device as uint8 and an epoch is a random permutation cut
into batches, so no DataLoader workers and no per-batch host-to-device copies.
Metrics are summed as device tensors and read once per epoch; the progress bar
reads the running loss only every `refresh_every` steps, so the GPU is not made
to wait for the host after each step.

A run folder holds:
    config.json  metrics.jsonl  curves.png  samples/epoch_XXX.png
    manifold/epoch_XXX.png (2-D latent models)  last.safetensors  best.safetensors
    state.safetensors (what --resume continues from)  train.lock (while a training runs)

Every --save-every epochs (and at the end, and on SIGINT/SIGTERM) the loop
writes last.safetensors and state.safetensors; a signal in the middle of an
epoch saves that epoch's permutation and position too, so a resumed run
continues bit-identically (on the CPU) where the interrupted one stopped.
"""

import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dgm_cli import __version__, speed
from dgm_cli import config as config_tools
from dgm_cli.atomic import atomic_path, ensure_writable_dir, remove_stale_temporaries, write_text
from dgm_cli.checkpoint import default_checkpoint, save_checkpoint
from dgm_cli.data import Dataset
from dgm_cli.distributed import Parallel
from dgm_cli.errors import DgmError, Interrupted
from dgm_cli.evaluate import read_means, validate
from dgm_cli.interrupt import GracefulInterrupt
from dgm_cli.plots import save_curves, save_image_grid
from dgm_cli.progress import make_progress, quiet_console
from dgm_cli.registry import get_spec
from dgm_cli.runlock import run_lock
from dgm_cli.sampling import manifold_images, sample_images
from dgm_cli.state import STATE_FILE, EpochPosition, TrainingState, capture_rng, restore_rng, save_state

MANIFOLD_GRID = 20


@dataclass(frozen=True)
class RunSettings:
    out_dir: Path
    seed: int
    device: torch.device
    checkpoint_dir: Path | None  # where the final model is copied as <model>.safetensors; None: no copy
    save_every: int = 1  # epochs between last.safetensors/state.safetensors (and always at the end)
    compile: bool = False  # torch.compile the training step
    precision: str = "fp32"  # fp32, tf32 (CUDA) or bf16 in training steps (speed.step_precision, speed.autocast)
    parallel: Parallel = field(default_factory=Parallel)  # this process's place under torchrun
    sync_batchnorm: bool = False  # under torchrun: BatchNorm over the global batch (PyTorch's SyncBatchNorm)


def save_figures(model, out_dir: Path, epoch: int, seed: int) -> None:
    """Samples from one fixed noise batch (the same latents every epoch), and the manifold when drawable."""
    name = f"epoch_{epoch:03d}.png"
    save_image_grid(sample_images(model, model.training_samples, seed=seed), out_dir / "samples" / name)
    if model.keeps_average:  # the weights as trained, beside their moving average
        raw = sample_images(model, model.training_samples, seed=seed, raw=True)
        save_image_grid(raw, out_dir / "samples" / f"epoch_{epoch:03d}_raw.png")
    if model.pixel_distribution == "bernoulli":
        draws = sample_images(model, model.training_samples, seed=seed, binary=True)
        save_image_grid(draws, out_dir / "samples" / f"epoch_{epoch:03d}_binary.png")
    if "manifold" in model.capabilities and model.latent_dim == 2:
        manifold = manifold_images(model, MANIFOLD_GRID)
        save_image_grid(manifold, out_dir / "manifold" / name, nrow=MANIFOLD_GRID)
    model.train()


def refuse_existing_run(out_dir: Path) -> None:
    """A folder that already holds a run is never overwritten."""
    if (Path(out_dir) / "last.safetensors").exists():
        raise DgmError(
            f"{out_dir} already holds a training run; choose another --out, or continue it with --resume {out_dir} "
            "(nothing was changed)"
        )


def resume_command(model_name: str, out: Path) -> str:
    return f"dgm train {model_name} --resume {out}"


def train(
    model_name: str, config, dataset: Dataset, settings: RunSettings, console, *, resume: TrainingState | None = None
) -> list[dict]:
    """Train into settings.out_dir, from scratch or from `resume`; returns the per-epoch records (epoch 0 = before training).

    The run folder is locked for the whole run; SIGINT/SIGTERM save a resumable state and raise Interrupted.
    Under torchrun (settings.parallel) only rank 0 locks, prints and writes.
    """
    out, parallel = settings.out_dir, settings.parallel
    speed.check_precision(settings.precision, settings.device, get_spec(model_name).module_class)
    check_parallel_settings(model_name, config, settings)
    if parallel.is_main:
        ensure_writable_dir(out)
        if settings.checkpoint_dir is not None:
            ensure_writable_dir(settings.checkpoint_dir)
    else:
        console = quiet_console()
    # A launcher may pass on a Ctrl-C that the terminal has delivered to the processes already:
    # a copy that arrives within a second is the same request, not a second one.
    duplicate_window = 1.0 if parallel.enabled else 0.0
    lock = run_lock(out) if parallel.is_main else nullcontext()
    with lock, GracefulInterrupt(duplicate_window) as interrupt, speed.matmul_precision(settings.precision):
        if resume is None and parallel.is_main:
            refuse_existing_run(out)
        if parallel.is_main:  # left by a process killed mid-write; the lock says none is writing now
            remove_stale_temporaries(out, subfolders=("samples", "manifold"))
        return _train(model_name, config, dataset, settings, console, resume, interrupt)


def check_parallel_settings(model_name: str, config, settings: RunSettings) -> None:
    """Refuse what data-parallel training cannot do, before any process starts working."""
    parallel = settings.parallel
    if settings.sync_batchnorm:
        if not parallel.enabled:
            raise DgmError("--sync-batchnorm only matters under torchrun with more than one process; leave it out")
        if settings.device.type != "cuda":
            raise DgmError("--sync-batchnorm needs CUDA (PyTorch's SyncBatchNorm has no CPU kernel); leave it out on the CPU")
        module = get_spec(model_name).module_class(config)
        if not any(isinstance(layer, torch.nn.modules.batchnorm._BatchNorm) for layer in module.modules()):
            raise DgmError(f"the {model_name} has no batch normalisation; leave out --sync-batchnorm")
    if not parallel.enabled:
        return
    if settings.compile:
        raise DgmError("--compile is not supported under torchrun yet; leave it out")
    if config.batch_size < 2 * parallel.world_size:
        raise DgmError(
            f"--batch-size is the global batch and must give each of the {parallel.world_size} processes at least "
            f"two images; use --batch-size {2 * parallel.world_size} or more"
        )


def _train(model_name, config, dataset, settings, console, resume, interrupt) -> list[dict]:
    spec = get_spec(model_name)
    out, device, seed, parallel = settings.out_dir, settings.device, settings.seed, settings.parallel
    main = parallel.is_main
    headline = spec.module_class.headline_metrics

    # The same seed in every process: the same initial weights, permutations and noise (distributed.py).
    torch.manual_seed(seed)
    data_generator = torch.Generator().manual_seed(seed)  # static binarization and the like, on the CPU
    model = spec.module_class(config)
    if settings.sync_batchnorm:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    optimizers = model.configure_optimizers()
    # The configured rates, which learning_rate_factor scales (a resumed optimizer holds the last scaled ones).
    base_rates = [[group["lr"] for group in optimizer.param_groups] for optimizer in optimizers]
    # A resumed run prepares its splits again from the seed: the same draws as at its start.
    train_images = model.prepare_split(dataset.train.images, train=True, generator=data_generator).to(device)
    val_images = model.prepare_split(dataset.val.images, train=False, generator=data_generator).to(device)
    train_labels, val_labels = dataset.train.labels.to(device), dataset.val.labels.to(device)

    run_facts = {"seed": seed, "device": str(device), "torch": torch.__version__, "dgm": __version__}
    if parallel.enabled:
        run_facts["processes"] = parallel.world_size
    if main:
        write_text(
            out / "config.json",
            json.dumps(
                {
                    "model": model_name,
                    "config": config_tools.to_dict(config),
                    "data": dataset.describe(),
                    **run_facts,
                    "checkpoint_dir": None if settings.checkpoint_dir is None else str(settings.checkpoint_dir),
                },
                indent=2,
            ),
        )

    # Epochs past the end of the run are clipped to its last epoch, so a short run still shows its result.
    sample_epochs = {min(epoch, config.epochs) for epoch in config.sample_epochs}
    history: list[dict] = []
    best_value = None
    step = 0
    saved_epoch = 0  # the epoch last.safetensors holds
    position: EpochPosition | None = None
    if resume is not None:
        try:
            model.load_state_dict(resume.model, strict=True)
            for optimizer, stored in zip(optimizers, resume.optimizers, strict=True):
                optimizer.load_state_dict(stored)
            restore_rng(resume.rng, device)
        except (RuntimeError, ValueError, KeyError) as error:
            reason = " ".join(str(error).split())[:200]
            raise DgmError(f"{out / STATE_FILE} does not fit its own model and optimizers ({reason})") from None
        history, best_value, step, position = list(resume.history), resume.best_value, resume.step, resume.position
        saved_epoch = resume.epoch

    def save_state_now(epoch: int, position: EpochPosition | None = None) -> None:
        state = TrainingState(
            model_name, config, epoch, step, history, best_value,
            model.state_dict(), [optimizer.state_dict() for optimizer in optimizers], capture_rng(device), position,
        )  # fmt: skip
        save_state(out / STATE_FILE, state)

    def save_progress(record: dict, *, is_best: bool, checkpoint: bool = True) -> None:
        nonlocal saved_epoch
        if not main:
            return
        write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
        train_facts = {**run_facts, "epoch": record["epoch"], "step": step, "metrics": record}
        names = (("last.safetensors",) if checkpoint else ()) + (("best.safetensors",) if is_best else ())
        for name in names:
            save_checkpoint(
                out / name, model, model_name=model_name, config=config, data=dataset.describe(), train=train_facts
            )
        if checkpoint:
            save_state_now(record["epoch"])
            saved_epoch = record["epoch"]

    def record_epoch(record: dict) -> None:
        nonlocal best_value
        history.append(record)
        is_best = False
        if model.monitor is not None:
            monitor, direction = model.monitor
            value = record[f"val_{monitor}"]
            is_best = best_value is None or (value > best_value if direction == "max" else value < best_value)
            best_value = value if is_best else best_value
        if not main:  # the figures draw from their own seeded generators, so skipping them changes no stream
            return
        if record["epoch"] in sample_epochs and "sample" in model.capabilities:
            save_figures(model, out, record["epoch"], seed)
        epoch = record["epoch"]
        checkpoint = epoch % settings.save_every == 0 or epoch == config.epochs or interrupt.requested is not None
        save_progress(record, is_best=is_best, checkpoint=checkpoint)
        save_curves(
            history, out / "curves.png", title=f"{model_name} on {dataset.name}", reference_lines=model.reference_lines
        )

    def stop_requested(*, check_others: bool) -> bool:
        """Whether to stop here; under torchrun all processes must agree, which costs an all-reduce,
        so they compare only where check_others says (about 20 times an epoch, and after each)."""
        if not parallel.enabled:
            return interrupt.requested is not None
        if not check_others:
            return False
        if parallel.any(interrupt.requested is not None, device) and interrupt.requested is None:
            interrupt.requested = "a signal to another process"
        return interrupt.requested is not None

    def stop_if_interrupted(epoch_done: int, position: EpochPosition | None) -> None:
        if interrupt.requested is None:
            return
        if position is not None:
            # Rank 0 saves every process's own metric sums, so a resumed run adds in the same order.
            position = EpochPosition(position.next_batch, position.seconds, position.permutation,
                                     parallel.gather(position.sums, device))  # fmt: skip
            if main:
                save_state_now(epoch_done, position)
        where = f"epoch {epoch_done + 1}, batch {position.next_batch}" if position else f"the end of epoch {epoch_done}"
        raise Interrupted(
            f"{interrupt.requested}: stopped at {where} and saved {out / STATE_FILE}; "
            f"continue with: {resume_command(model_name, out)}"
        )

    def validation(images, labels, prefix):
        return validate(model, images, labels, prefix=prefix, parallel=parallel)

    if resume is None:
        record_epoch({"epoch": 0, "step": 0, **validation(val_images, val_labels, "val_")})
    elif main:
        write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))

    batch_size = config.batch_size
    # A last batch too small to give every process two images is skipped (with one process: a batch of
    # one image): batch statistics (the GAN's BatchNorm) need two.
    remainder = len(train_images) % batch_size
    n = len(train_images) - remainder if 0 < remainder < 2 * parallel.world_size else len(train_images)
    steps_per_epoch = math.ceil(n / batch_size)
    refresh_every = max(1, steps_per_epoch // 20)
    total_steps = max(1, config.epochs * steps_per_epoch)
    max_grad_norm = getattr(config, "max_grad_norm", 0.0)  # a config field of the models that offer clipping
    first_epoch = history[-1]["epoch"] + 1 if history else 1
    if parallel.enabled:
        training_step = model.distribute(lambda module: parallel.wrap(module, device))
    else:
        training_step = speed.step_function(model, settings.compile)
    with make_progress(console, extra="{task.fields[status]}") as progress:
        task = progress.add_task("training", total=config.epochs * steps_per_epoch, completed=step, status="")
        for epoch in range(first_epoch, config.epochs + 1):
            progress.update(task, description=f"epoch {epoch}/{config.epochs}")
            if position is not None:  # the rest of an epoch that was interrupted
                permutation, sums, first_batch = position.permutation.to(device), position.sums, position.next_batch
                started = time.perf_counter() - position.seconds
                sums = {name: parallel.own_share(value.to(device)) for name, value in sums.items()}
                rows_summed = min(n, first_batch * batch_size) // parallel.world_size  # for the progress bar only
                position = None
            else:
                permutation, sums, first_batch = torch.randperm(len(train_images), device=device), {}, 0
                rows_summed = 0
                started = time.perf_counter()
            for index in range(first_batch, steps_per_epoch):
                factor = model.learning_rate_factor(step / total_steps)
                for optimizer, rates in zip(optimizers, base_rates):
                    for group, rate in zip(optimizer.param_groups, rates):
                        group["lr"] = rate * factor
                indices = permutation[index * batch_size : min(n, (index + 1) * batch_size)]
                model.shard = parallel.shard(len(indices))  # None in one process
                indices = indices[parallel.rows(len(indices))]
                batch = train_images[indices]
                with speed.step_precision(settings.precision, device):
                    with speed.autocast(settings.precision, device):
                        metrics = training_step(batch, train_labels[indices])
                    if not model.manual_optimization:
                        optimizers[0].zero_grad(set_to_none=True)
                        model.shard_loss(metrics["loss"]).backward()
                        if max_grad_norm > 0:
                            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
                        optimizers[0].step()
                step += 1
                for name, value in metrics.items():
                    sums[name] = sums.get(name, 0) + value.detach() * len(batch)
                rows_summed += len(batch)
                if (index + 1) % refresh_every == 0 and main:
                    running = read_means({name: sums[name] for name in headline}, rows_summed, prefix="")
                    status = "  ".join(f"{name} {value:.3f}" for name, value in running.items())
                    rate = min(n, (index + 1) * batch_size) / (time.perf_counter() - started)
                    progress.update(task, status=f"{status}  {rate:,.0f} img/s")
                progress.advance(task)
                if index + 1 < steps_per_epoch and stop_requested(check_others=(index + 1) % refresh_every == 0):
                    seconds = time.perf_counter() - started
                    stop_if_interrupted(epoch - 1, EpochPosition(index + 1, seconds, permutation, sums))

            model.shard = None
            parallel.share_buffers(model)
            train_metrics = read_means(parallel.sum(sums, device), n, prefix="train_")
            broken = {name: value for name, value in train_metrics.items() if not math.isfinite(value)}
            if broken:
                raise DgmError(
                    f"training diverged in epoch {epoch} ({', '.join(f'{k} = {v}' for k, v in broken.items())}); "
                    f"{out / 'last.safetensors'} still holds epoch {saved_epoch}; try a smaller --lr"
                )
            seconds = time.perf_counter() - started
            record = {"epoch": epoch, "step": step, **train_metrics, **validation(val_images, val_labels, "val_")}
            record.update(seconds=round(seconds, 3), images_per_second=round(n / seconds, 1))
            record_epoch(record)
            shown = "  ".join(
                f"{name} {record[f'train_{name}']:.3f}" + (f"/{record[f'val_{name}']:.3f}" if f"val_{name}" in record else "")
                for name in headline
            )
            progress.console.print(
                f"epoch {epoch:>3}/{config.epochs}  {shown} (train/val)  {seconds:.1f} s  {n / seconds:,.0f} img/s",
                markup=False,
            )
            stop_requested(check_others=True)
            stop_if_interrupted(epoch, None)

    parallel.check_parameters_agree(model, device)
    # The final model's test-split metrics, recorded for the report and never used to choose anything.
    # data_generator is used for nothing else, so preparing the test split here draws what it would have at start-up.
    test_images = model.prepare_split(dataset.test.images, train=False, generator=data_generator).to(device)
    # On a forked generator, so that a run extended later with --epochs continues the random stream
    # it would have had without this evaluation.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        history[-1].update(validation(test_images, dataset.test.labels.to(device), "test_"))
    save_progress(history[-1], is_best=False)
    if settings.checkpoint_dir is not None and main:
        target = default_checkpoint(model_name, settings.checkpoint_dir)
        with atomic_path(target) as tmp:
            tmp.write_bytes((out / "last.safetensors").read_bytes())
    return history
