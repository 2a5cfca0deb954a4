"""The one training loop, for every registered model.

`loop` is the loop, to be read top to bottom: per epoch, shuffle, steps,
validation, record, checkpoints; then the final model's test-split metrics and
its copy to checkpoints/. `Training` holds what the loop works on and keeps
between steps (model, optimizers, the splits on the device, how far the run
has got) as its fields, and does the single actions the loop names (one
optimizer step, an epoch's record, saving the resume state). Where each thing
is kept on disk is the run folder's business (run_folder.py).

The whole split sits on the training device as uint8 and an epoch is a random
permutation cut into batches, so no DataLoader workers and no per-batch
host-to-device copies. Metrics are summed as device tensors and read once per
epoch; the progress bar reads the running loss only every `refresh_every`
steps, so the GPU is not made to wait for the host after each step.

Every --save-every epochs (and at the end, and on SIGINT/SIGTERM) the run
writes last.safetensors and state.safetensors; a signal in the middle of an
epoch saves that epoch's permutation and position too, so a resumed run
continues bit-identically (on the CPU) where the interrupted one stopped.
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from dgm_cli import __version__, speed
from dgm_cli import config as config_tools
from dgm_cli.atomic import ensure_writable_dir
from dgm_cli.budget import VALIDATIONS, Budget, held_out_size, seeded_subset
from dgm_cli.checkpoint import default_checkpoint, file_sha256, load_weights_into, publish_checkpoint
from dgm_cli.data import Dataset
from dgm_cli.distributed import Parallel
from dgm_cli.errors import DgmError, Interrupted
from dgm_cli.estimators import VALIDATION_BATCH, read_means, validate
from dgm_cli.interrupt import GracefulInterrupt
from dgm_cli.models.conditioning import CLASSES
from dgm_cli.plots import save_curves, save_image_grid
from dgm_cli.progress import make_progress, quiet_console
from dgm_cli.registry import get_spec, preset_of
from dgm_cli.run_folder import BEST_FILE, LAST_FILE, RunFolder, resume_command
from dgm_cli.sampling import class_grid, manifold_images, sample_images
from dgm_cli.state import EpochPosition, TrainingState, capture_rng, restore_rng, save_state

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
    tensorboard: bool = False  # also log the records, sample grids and configuration as TensorBoard events
    init_from: Path | None = None  # a new run starts from this checkpoint's weights instead of random ones
    on_epoch: Callable[[dict], None] | None = None  # called with each epoch's record once it is saved (rank 0)


def train(
    model_name: str, config, dataset: Dataset, settings: RunSettings, console, *, resume: TrainingState | None = None
) -> list[dict]:
    """Train into settings.out_dir, from scratch or from `resume`; returns the per-epoch records (epoch 0 = before training).

    The run folder is locked for the whole run; SIGINT/SIGTERM save a resumable state and raise Interrupted.
    Under torchrun (settings.parallel) only rank 0 locks, prints and writes.
    """
    parallel = settings.parallel
    speed.check_precision(settings.precision, settings.device, get_spec(model_name).module_class)
    check_parallel_settings(model_name, config, settings)
    if resume is None:
        config = classes_from_data(config, dataset)
    check_labelled(config, dataset, needs_labels=get_spec(model_name).module_class.needs_labels)
    if settings.tensorboard:
        from dgm_cli.tensorboard_log import require_tensorboard

        require_tensorboard()
    run = RunFolder(settings.out_dir, writes=parallel.is_main)
    if run.writes and settings.checkpoint_dir is not None:  # before the run folder exists, so a bad one leaves nothing
        ensure_writable_dir(settings.checkpoint_dir)
    run.prepare()
    if not parallel.is_main:
        console = quiet_console()
    # A launcher may pass on a Ctrl-C that the terminal has delivered to the processes already:
    # a copy that arrives within a second is the same request, not a second one.
    duplicate_window = 1.0 if parallel.enabled else 0.0
    with run.lock(), GracefulInterrupt(duplicate_window) as interrupt, speed.matmul_precision(settings.precision):
        if resume is None:
            run.refuse_existing(holding_lock=True)  # holding the lock: a training started beside this one may have won
        run.remove_stale_temporaries()  # left by a process killed mid-write; the lock says none is writing now
        training = Training(model_name, config, dataset, settings, run, interrupt, resume)
        try:
            return loop(training, console)
        finally:
            training.close()


def classes_from_data(config, dataset: Dataset):
    """The config with the data's number of classes (an image folder's class folders; 10 for MNIST), for a
    model whose config has that field; unlabelled data leave it as it is."""
    if dataset.classes and "classes" in config_tools.data_fields(type(config)):
        return replace(config, classes=dataset.classes)
    return config


def check_labelled(config, dataset: Dataset, *, needs_labels: bool = False) -> None:
    """A conditional model (and a classifier: `needs_labels`) needs every training and validation image's class,
    within the config's classes."""
    if not (getattr(config, "conditional", False) or needs_labels):
        return
    what = "--conditional" if getattr(config, "conditional", False) else "a classifier"
    classes = getattr(config, "classes", CLASSES)
    for name in ("train", "val"):
        split = dataset.split(name)
        if dataset.classes == 0 or split.labels is None or len(split.labels) != len(split.images):
            raise DgmError(
                f"{what} needs class labels, and the {name} split of {dataset.name} has none "
                "(an image folder gets them from one subfolder per class)"
            )
        if len(split.labels) and not (0 <= int(split.labels.min()) and int(split.labels.max()) < classes):
            raise DgmError(
                f"this model takes {classes} classes (0..{classes - 1}), but the {name} split of "
                f"{dataset.name} has labels {int(split.labels.min())}..{int(split.labels.max())}"
            )


def loop(t: "Training", console) -> list[dict]:
    """The epochs of the training `t`, from where it stands to its planned end (its last epoch, or under a
    budget its deadline); returns the per-epoch records."""
    if t.history:  # resumed: metrics.jsonl says what the state holds, and nothing later
        t.run.write_metrics(t.history)
    else:
        t.first_record(console)
    # Epoch lines suffice (and a budgeted run whose epochs are long adds a line each tenth of its budget).
    with make_progress(console, extra="{task.fields[status]}", log_every=None) as progress:
        task = t.add_progress_task(progress)
        epoch = t.history[-1]["epoch"]
        final = t.done(epoch)
        while not final:
            epoch += 1
            progress.update(task, description=t.epoch_name(epoch))
            current = t.begin_epoch()
            batches = current.first_batch
            for index in range(current.first_batch, t.steps_per_epoch):
                t.train_step(current, index)
                batches = index + 1
                if (index + 1) % t.refresh_every == 0 and t.parallel.is_main:
                    progress.update(task, status=t.running_status(current, index))
                    t.note_budget(progress.console, epoch, index + 1)
                t.advance_progress(progress, task)
                if t.budget is not None and t.budget.steps_over():
                    break
                if index + 1 < t.steps_per_epoch and t.stop_requested(check_others=(index + 1) % t.refresh_every == 0):
                    t.stop(epoch - 1, current.position(index + 1))
            final = t.done(epoch)  # decided once: the clock moves on while the epoch is recorded
            record = t.end_epoch(epoch, current, batches, final=final)
            t.record_epoch(record, final=final)
            progress.console.print(t.epoch_line(record), markup=False)
            t.stop_requested(check_others=True)
            if t.interrupt.requested is not None:
                t.stop(epoch, None)
    return t.finish(console)


@dataclass
class EpochInProgress:
    """One epoch's order of images and the metric sums of the batches done so far."""

    permutation: torch.Tensor
    sums: dict[str, torch.Tensor]
    first_batch: int  # 0, or where a resumed epoch goes on
    rows_summed: int  # images in `sums` in this process, for the progress bar
    started: float  # perf_counter at the epoch's start (earlier for a resumed epoch: its seconds so far)

    def position(self, next_batch: int) -> EpochPosition:
        return EpochPosition(next_batch, time.perf_counter() - self.started, self.permutation, self.sums)


class Training:
    """What one training works on and keeps between steps; `loop` says when each of its actions happens."""

    def __init__(self, model_name, config, dataset, settings: RunSettings, run: RunFolder, interrupt, resume):
        self.model_name, self.config, self.dataset, self.run, self.interrupt = (
            model_name,
            config,
            dataset,
            run,
            interrupt,
        )
        self.settings, self.device, self.parallel, self.seed = (
            settings,
            settings.device,
            settings.parallel,
            settings.seed,
        )
        device = self.device
        # The same seed in every process: the same initial weights, permutations and noise (distributed.py).
        torch.manual_seed(self.seed)
        self.data_generator = torch.Generator().manual_seed(self.seed)  # static binarization and the like, on the CPU
        model = get_spec(model_name).module_class(config)
        # After the random initialisation, so the run's random streams are those of a run from scratch.
        started_from = self._initial_weights(model, resume)
        if resume is None and started_from is None:  # a run from scratch: a start that may depend on the data
            model.initialize_from_data(dataset.train.images)  # (the VAE's --init paper)
        if settings.sync_batchnorm:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model.to(device)
        self.optimizers = self.model.configure_optimizers()
        # The configured rates, which learning_rate_factor scales (a resumed optimizer holds the last scaled ones).
        self.base_rates = [[group["lr"] for group in optimizer.param_groups] for optimizer in self.optimizers]
        # A resumed run prepares its splits again from the seed: the same draws as at its start.
        self.train_images = self.model.prepare_split(
            dataset.train.images, train=True, generator=self.data_generator
        ).to(device)
        self.val_images = self.model.prepare_split(dataset.val.images, train=False, generator=self.data_generator).to(
            device
        )
        self.train_labels, self.val_labels = dataset.train.labels.to(device), dataset.val.labels.to(device)

        self._record_facts(started_from)

        # How far the run has got: what state.safetensors keeps.
        self.history: list[dict] = []
        self.best_value: float | None = None
        self.step = 0
        self.saved_epoch = 0  # the epoch last.safetensors holds
        self.position: EpochPosition | None = None  # inside the epoch after the last completed one
        self.wall_before, self.started = 0.0, time.perf_counter()  # the run's wall-clock time in earlier processes
        if resume is not None:
            self._restore(resume)
        # The budget's clock counts from here, as wall_seconds does: what came before is reading the data.
        minutes = getattr(config, "minutes", 0.0)
        self.budget = Budget(60 * minutes, self.wall_before, self.started) if minutes else None
        self.budget_line = self.wall_before  # spent() at the budget's latest line of progress
        if self.budget is not None and self.history:  # resumed: the held-out subsets and the end it planned
            self._resume_budget()

        self._plan_epochs()
        if self.parallel.enabled:
            self.step_function = self.model.distribute(lambda module: self.parallel.wrap(module, device))
        else:
            self.step_function = speed.step_function(self.model, settings.compile)
        self.tensorboard = self._open_tensorboard(resume) if settings.tensorboard and run.writes else None

    def _record_facts(self, started_from: dict | None) -> None:
        """What every checkpoint of the run records about it (run_facts), and the run's config.json."""
        settings, device, config, model_name = self.settings, self.device, self.config, self.model_name
        self.run_facts = {
            "seed": self.seed,
            "device": str(device),
            "precision": settings.precision,
            "torch": torch.__version__,
            "dgm": __version__,
        }
        if self.parallel.enabled:
            self.run_facts["processes"] = self.parallel.world_size
        if started_from is not None:
            self.run_facts["init_from"] = started_from
        preset = preset_of(get_spec(model_name), config)
        if preset is not None:  # the published number travels with every checkpoint of the run
            self.run_facts["preset"] = {
                "name": preset.name,
                "published": preset.published,
                "metric": preset.metric,
                "reference": preset.reference,
            }
        checkpoint_dir = None if settings.checkpoint_dir is None else str(settings.checkpoint_dir)
        self.run.write_config(
            {
                "model": model_name,
                "config": config_tools.to_dict(config),
                "data": self.dataset.describe(),
                **self.run_facts,
                "checkpoint_dir": checkpoint_dir,
                "tensorboard": settings.tensorboard,
                "save_every": settings.save_every,
            }
        )

    def _plan_epochs(self) -> None:
        """Which epochs draw figures, how many images and steps an epoch has, how often the bar refreshes."""
        config = self.config
        # Epochs past the end of the run are clipped to its last epoch, so a short run still shows its result;
        # a budgeted run, whose last epoch is not known in advance, draws before training and at the end.
        if self.budget is None:
            self.sample_epochs = {min(epoch, config.epochs) for epoch in config.sample_epochs}
        else:
            self.sample_epochs = {0} & set(config.sample_epochs)
        # A last batch too small to give every process two images is skipped (with one process: a batch of
        # one image): batch statistics (the GAN's BatchNorm) need two.
        batch_size, world = config.batch_size, self.parallel.world_size
        remainder = len(self.train_images) % batch_size
        self.n = len(self.train_images) - remainder if 0 < remainder < 2 * world else len(self.train_images)
        self.steps_per_epoch = math.ceil(self.n / batch_size)
        self.refresh_every = max(1, self.steps_per_epoch // 20)
        self.total_steps = max(1, config.epochs * self.steps_per_epoch)
        self.max_grad_norm = getattr(config, "max_grad_norm", 0.0)  # a config field of the models that offer clipping

    def _initial_weights(self, model, resume: TrainingState | None) -> dict | None:
        """With --init-from, load the checkpoint's weights into the new `model`; returns where they came from
        (a resumed run's record of it, read back from its config.json), or None for a run from scratch."""
        if resume is not None:
            return self.run.read_config().get("init_from")
        if self.settings.init_from is None:
            return None
        info = load_weights_into(model, self.settings.init_from, model_name=self.model_name)
        return {
            "path": str(Path(self.settings.init_from).resolve()),
            "sha256": file_sha256(self.settings.init_from),
            "epoch": info.train.get("epoch"),
            "step": info.train.get("step"),
            "data": info.data.get("name"),
        }

    def _restore(self, resume: TrainingState) -> None:
        try:
            self.model.load_state_dict(resume.model, strict=True)
            for optimizer, stored in zip(self.optimizers, resume.optimizers, strict=True):
                optimizer.load_state_dict(stored)
            restore_rng(resume.rng, self.device)
        except (RuntimeError, ValueError, KeyError) as error:
            reason = " ".join(str(error).split())[:200]
            raise DgmError(f"{self.run.state_path} does not fit its own model and optimizers ({reason})") from None
        self.history, self.best_value, self.step = list(resume.history), resume.best_value, resume.step
        self.position, self.saved_epoch, self.wall_before = resume.position, resume.epoch, resume.wall_seconds

    def _open_tensorboard(self, resume: TrainingState | None):
        from dgm_cli.tensorboard_log import TensorBoardLog

        monitored = [f"val/{name}" for name in self.model.headline_metrics]
        hyperparameters = {
            "model": self.model_name,
            "dataset": self.dataset.name,
            **self.run_facts,
            **config_tools.to_dict(self.config),
        }
        continue_at = None if resume is None else resume.epoch + 1
        return TensorBoardLog(
            self.run.path, hyperparameters=hyperparameters, metrics=monitored, continue_at=continue_at
        )

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()

    # ------------------------------------------------------------ the run's extent: epochs or a budget

    def done(self, epoch: int) -> bool:
        """Whether the run ends after `epoch`: its last planned epoch, or under a budget the steps' deadline
        (never before one step, so a budget smaller than its own evaluations still trains)."""
        if self.budget is None:
            return epoch >= self.config.epochs
        return epoch > 0 and self.budget.steps_over()

    def first_record(self, console) -> None:
        """Epoch 0: the untrained model's validation, figures and checkpoint. Under a budget, first the
        held-out subsets the budget affords, then what this record cost, which the end will cost again."""
        if self.budget is not None:
            plan = self._plan_held_out()
            self._use_held_out(plan)
        started = time.perf_counter()
        validation = self.validation(self.val_images, self.val_labels, "val_")
        validation_seconds = time.perf_counter() - started
        record = {"epoch": 0, "step": 0, **validation}
        if self.budget is None:
            self.record_epoch(record)
            return
        record["budget"] = plan
        self.record_epoch(record)
        # The end validates as warm code does, at the probe's second rate: this first validation also paid for
        # its batch shape's one-time set-up, which made the multi-scale flow's end plan twice what it took.
        warm_validation = plan["seconds_per_image"] * plan["validation_images"]
        self.budget.plan_end(
            time.perf_counter() - started - validation_seconds + warm_validation,
            warm_validation,
            plan["test_images"] / plan["validation_images"],
        )
        # Saved with the next record, for a resumed run.
        plan["end_seconds"], plan["steps_from"] = round(self.budget.end_seconds, 3), round(self.budget.steps_from, 3)
        left = self.budget.steps_until() - self.budget.spent()
        if left < self.budget.seconds / 2:
            console.print(
                f"warning: validating, drawing and saving take about {self.budget.end_seconds:.0f} s of the "
                f"{self.budget.seconds:.0f} s budget, which leaves {max(left, 0):.0f} s for training; give more "
                "--minutes",
                markup=False,
                soft_wrap=True,
            )

    def _plan_held_out(self) -> dict:
        """How many validation and test images a budgeted run's evaluations take, from the time a small
        validation batch takes here the second time: the first pays for one-time set-up (a multi-scale flow's
        took several times as long as the next)."""
        images, labels = self.val_images[: VALIDATION_BATCH // 5], self.val_labels[: VALIDATION_BATCH // 5]
        self.validation(images, labels, "")
        started = time.perf_counter()
        self.validation(images, labels, "")
        per_image = (time.perf_counter() - started) / max(len(images), 1)
        size = held_out_size(len(self.val_images), per_image, self.budget.seconds)
        return {
            "minutes": self.config.minutes,
            "validation_images": size,
            "test_images": min(size, len(self.dataset.test)),
            "seconds_per_image": float(f"{per_image:.4g}"),
        }

    def _use_held_out(self, plan: dict) -> None:
        self.val_images, self.val_labels = seeded_subset(
            self.val_images, self.val_labels, plan["validation_images"], self.seed
        )

    def _resume_budget(self) -> None:
        plan = self.history[0]["budget"]
        self._use_held_out(plan)
        self.budget.end_seconds, self.budget.steps_from = plan.get("end_seconds", 0.0), plan.get("steps_from", 0.0)
        validated = [
            record["elapsed"]
            for record in self.history
            if "elapsed" in record and any(key.startswith("val_") for key in record)
        ]
        self.budget.last_validation = validated[-1] if validated else 0.0

    def progress_total(self) -> int:
        """The bar's total: steps, or under a budget its seconds."""
        return self.config.epochs * self.steps_per_epoch if self.budget is None else round(self.budget.seconds)

    def progress_done(self) -> int:
        return self.step if self.budget is None else min(int(self.budget.spent()), self.progress_total())

    def add_progress_task(self, progress) -> int:
        self.progress_shown = self.progress_done()
        return progress.add_task("training", total=self.progress_total(), completed=self.progress_shown, status="")

    def advance_progress(self, progress, task: int) -> None:
        """One step on the bar; under a budget the bar counts seconds, so it moves by whole seconds."""
        now = self.progress_done()
        if now > self.progress_shown:
            progress.advance(task, now - self.progress_shown)
            self.progress_shown = now

    def note_budget(self, console, epoch: int, batches: int) -> None:
        """Under a budget, a line each tenth of it that passes without an epoch's line (long epochs)."""
        budget = self.budget
        if budget is None or budget.spent() - self.budget_line < budget.seconds / VALIDATIONS:
            return
        self.budget_line = budget.spent()
        console.print(
            f"epoch {epoch:>3}  {batches / self.steps_per_epoch:.0%} of its steps  "
            f"{budget.spent() / 60:.1f} of {self.config.minutes:g} min",
            markup=False,
        )

    def epoch_name(self, epoch: int) -> str:
        if self.budget is None:
            return f"epoch {epoch}/{self.config.epochs}"
        return f"epoch {epoch}, seconds of {self.config.minutes:g} min"

    # ------------------------------------------------------------ one epoch

    def begin_epoch(self) -> EpochInProgress:
        """A fresh permutation, or the rest of the epoch an interrupted run stopped in."""
        if self.position is None:
            permutation = torch.randperm(len(self.train_images), device=self.device)
            return EpochInProgress(permutation, {}, 0, 0, time.perf_counter())
        position, self.position = self.position, None
        sums = {name: self.parallel.own_share(value.to(self.device)) for name, value in position.sums.items()}
        rows_summed = min(self.n, position.next_batch * self.config.batch_size) // self.parallel.world_size
        started = time.perf_counter() - position.seconds
        return EpochInProgress(position.permutation.to(self.device), sums, position.next_batch, rows_summed, started)

    def train_step(self, current: EpochInProgress, index: int) -> None:
        """Batch `index` of the epoch: the scheduled learning rate, the model's step, the metric sums."""
        progress = self.step / self.total_steps if self.budget is None else self.budget.progress()
        factor = self.model.learning_rate_factor(progress)
        for optimizer, rates in zip(self.optimizers, self.base_rates):
            for group, rate in zip(optimizer.param_groups, rates):
                group["lr"] = rate * factor
        batch_size = self.config.batch_size
        indices = current.permutation[index * batch_size : min(self.n, (index + 1) * batch_size)]
        self.model.shard = self.parallel.shard(len(indices))  # None in one process
        indices = indices[self.parallel.rows(len(indices))]
        batch = self.train_images[indices]
        precision, optimizer = self.settings.precision, self.optimizers[0]
        with speed.step_precision(precision, self.device):
            with speed.autocast(precision, self.device):
                metrics = self.step_function(batch, self.train_labels[indices])
            if not self.model.manual_optimization:
                optimizer.zero_grad(set_to_none=True)
                self.model.shard_loss(metrics["loss"]).backward()
                if self.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
                optimizer.step()
                self.model.optimizer_stepped(optimizer)
        self.step += 1
        for name, value in metrics.items():
            current.sums[name] = current.sums.get(name, 0) + value.detach() * len(batch)
        current.rows_summed += len(batch)

    def running_status(self, current: EpochInProgress, index: int) -> str:
        """The progress bar's running means and speed (reading them waits for the device, so not every step)."""
        headline = self.model.headline_metrics
        running = read_means({name: current.sums[name] for name in headline}, current.rows_summed, prefix="")
        rate = min(self.n, (index + 1) * self.config.batch_size) / (time.perf_counter() - current.started)
        return "  ".join(f"{name} {value:.3f}" for name, value in running.items()) + f"  {rate:,.0f} img/s"

    def end_epoch(self, epoch: int, current: EpochInProgress, batches: int, *, final: bool) -> dict:
        """The epoch's record after its first `batches` batches (all of them, unless a budget ran out): train
        means over all processes, validation (under a budget only every tenth of it, and at the end), time;
        a diverged run stops here."""
        self.model.shard = None
        self.parallel.share_buffers(self.model)
        images = min(self.n, batches * self.config.batch_size)
        train_metrics = read_means(self.parallel.sum(current.sums, self.device), images, prefix="train_")
        broken = {name: value for name, value in train_metrics.items() if not math.isfinite(value)}
        if broken:
            # metrics.jsonl shows the epoch that diverged (dgm runs reads it); the state keeps the last good one.
            self.run.write_metrics(
                self.history + [{"epoch": epoch, "step": self.step, **train_metrics, "diverged": True}]
            )
            raise DgmError(
                f"training diverged in epoch {epoch} ({', '.join(f'{k} = {v}' for k, v in broken.items())}); "
                f"{self.run.last_path} still holds epoch {self.saved_epoch}; try a smaller --lr"
            )
        seconds = time.perf_counter() - current.started
        record = {"epoch": epoch, "step": self.step, **train_metrics}
        budget = self.budget
        if budget is None or final or budget.validation_due():
            record.update(self.validation(self.val_images, self.val_labels, "val_"))
            if budget is not None:
                budget.last_validation = budget.spent()
        record.update({"seconds": round(seconds, 3), "images_per_second": round(images / seconds, 1)})
        if batches < self.steps_per_epoch:  # the budget ran out inside the epoch
            record["epoch_share"] = round(batches / self.steps_per_epoch, 4)
        if budget is not None:
            record["elapsed"] = round(budget.spent(), 3)  # of the budget, at this record
        return record

    def epoch_line(self, record: dict) -> str:
        validated = any(f"val_{name}" in record for name in self.model.headline_metrics)
        shown = "  ".join(
            f"{name} {record[f'train_{name}']:.3f}"
            + (f"/{record[f'val_{name}']:.3f}" if f"val_{name}" in record else "")
            for name in self.model.headline_metrics
        ) + (" (train/val)" if validated else " (train)")
        speed = f"{record['seconds']:.1f} s  {record['images_per_second']:,.0f} img/s"
        if self.budget is None:
            return f"epoch {record['epoch']:>3}/{self.config.epochs}  {shown}  {speed}"
        self.budget_line = record["elapsed"]
        clock = f"{record['elapsed'] / 60:.1f} of {self.config.minutes:g} min"
        return f"epoch {record['epoch']:>3}  {shown}  {speed}  {clock}"

    def validation(self, images, labels, prefix: str) -> dict:
        return validate(self.model, images, labels, prefix=prefix, parallel=self.parallel)

    # ------------------------------------------------------------ records and checkpoints

    def record_epoch(self, record: dict, *, final: bool = False) -> None:
        """Add the epoch's record; save figures, metrics, checkpoints and curves as the settings say
        (`final`: the run's last epoch, which always saves)."""
        self.history.append(record)
        is_best = False
        if self.model.monitor is not None and f"val_{self.model.monitor[0]}" in record:
            monitor, direction = self.model.monitor
            value = record[f"val_{monitor}"]
            is_best = self.best_value is None or (
                value > self.best_value if direction == "max" else value < self.best_value
            )
            self.best_value = value if is_best else self.best_value
        if not self.run.writes:  # the figures draw from their own seeded generators, so skipping them changes no stream
            return
        epoch = record["epoch"]
        drawn = epoch in self.sample_epochs or (final and self.budget is not None)
        figures = self.save_figures(epoch) if drawn and "sample" in self.model.capabilities else []
        checkpoint = epoch % self.settings.save_every == 0 or final or self.interrupt.requested is not None
        self.save_progress(record, is_best=is_best, checkpoint=checkpoint)
        if checkpoint:  # drawing thousands of points each epoch would cost a long run a tenth of its time
            save_curves(
                self.history,
                self.run.curves_path,
                title=f"{self.model_name} on {self.dataset.name}",
                reference_lines=self.model.reference_lines,
            )
        if self.tensorboard is not None:
            self.tensorboard.record(record)
            self.tensorboard.images(figures, epoch)
        if self.settings.on_epoch is not None:
            self.settings.on_epoch(dict(record))

    def save_figures(self, epoch: int) -> list[Path]:
        """Samples from one fixed noise batch (the same latents every epoch), and the manifold when drawable."""
        model, count, seed, run = self.model, self.model.training_samples, self.seed, self.run
        labels, nrow = class_grid(model, count)  # a conditional model: one row per class
        count = count if labels is None else len(labels)
        draw = lambda **kind: sample_images(model, count, seed=seed, labels=labels, **kind)  # noqa: E731
        grids = [(run.figure_path("samples", epoch), draw())]
        if model.keeps_average:  # the weights as trained, beside their moving average
            grids.append((run.figure_path("samples", epoch, "raw"), draw(raw=True)))
        if model.pixel_distribution == "bernoulli":
            grids.append((run.figure_path("samples", epoch, "binary"), draw(binary=True)))
        # A conditional model's manifold belongs to one class (dgm manifold --label draws it).
        manifold = "manifold" in model.capabilities and model.latent_dim == 2 and not model.classes
        for path, images in grids:
            save_image_grid(images, path, nrow=nrow)
        if manifold:
            save_image_grid(
                manifold_images(model, MANIFOLD_GRID), run.figure_path("manifold", epoch), nrow=MANIFOLD_GRID
            )
        model.train()
        return [path for path, _ in grids] + ([run.figure_path("manifold", epoch)] if manifold else [])

    def save_progress(self, record: dict, *, is_best: bool, checkpoint: bool = True) -> None:
        """metrics.jsonl; with `checkpoint`, last.safetensors and the resume state; best.safetensors when best."""
        first = checkpoint and self.run.writes and not self.run.state_path.is_file()
        try:
            self.run.write_metrics(self.history)
            train_facts = {**self.run_facts, "epoch": record["epoch"], "step": self.step, "metrics": record}
            for name in ((LAST_FILE,) if checkpoint else ()) + ((BEST_FILE,) if is_best else ()):
                self.run.save_model(
                    name,
                    self.model,
                    model_name=self.model_name,
                    config=self.config,
                    data=self.dataset.describe(),
                    train=train_facts,
                )
            if checkpoint:
                self.save_state(record["epoch"])
                self.saved_epoch = record["epoch"]
        except (DgmError, KeyboardInterrupt):  # a failed write, or a second Ctrl-C in the middle of one
            if first:  # nothing resumable was ever saved: leave no half run, so the same command can start again
                self.run.forget_checkpoints()
            raise

    def save_state(self, epoch: int, position: EpochPosition | None = None) -> None:
        if not self.run.writes:
            return
        optimizers = [optimizer.state_dict() for optimizer in self.optimizers]
        wall_seconds = round(self.wall_before + time.perf_counter() - self.started, 3)
        state = TrainingState(
            self.model_name,
            self.config,
            epoch,
            self.step,
            self.history,
            self.best_value,
            self.model.state_dict(),
            optimizers,
            capture_rng(self.device),
            position,
            wall_seconds,
        )
        save_state(self.run.state_path, state)

    # ------------------------------------------------------------ stopping and finishing

    def stop_requested(self, *, check_others: bool) -> bool:
        """Whether to stop here; under torchrun all processes must agree, which costs an all-reduce,
        so they compare only where check_others says (about 20 times an epoch, and after each)."""
        interrupt, parallel = self.interrupt, self.parallel
        if not parallel.enabled:
            return interrupt.requested is not None
        if not check_others:
            return False
        if parallel.any(interrupt.requested is not None, self.device) and interrupt.requested is None:
            interrupt.requested = "a signal to another process"
        return interrupt.requested is not None

    def stop(self, epoch_done: int, position: EpochPosition | None) -> None:
        """Save where the run stopped (inside epoch_done + 1 at `position`, or after epoch_done) and raise Interrupted."""
        if position is not None:
            # Rank 0 saves every process's own metric sums, so a resumed run adds in the same order.
            position = EpochPosition(
                position.next_batch,
                position.seconds,
                position.permutation,
                self.parallel.gather(position.sums, self.device),
            )
            self.save_state(epoch_done, position)
        where = f"epoch {epoch_done + 1}, batch {position.next_batch}" if position else f"the end of epoch {epoch_done}"
        raise Interrupted(
            f"{self.interrupt.requested}: stopped at {where} and saved {self.run.state_path}; "
            f"continue with: {resume_command(self.model_name, self.run.path)}"
        )

    def finish(self, console) -> list[dict]:
        """The final model's test-split metrics (recorded for the report, never used to choose anything) and its copy."""
        self.parallel.check_parameters_agree(self.model, self.device)
        # data_generator is used for nothing else, so preparing the test split here draws what it would have at start-up.
        test_images = self.model.prepare_split(self.dataset.test.images, train=False, generator=self.data_generator)
        test_labels = self.dataset.test.labels
        if self.budget is not None:  # as many images as the budget's validations take
            test_images, test_labels = seeded_subset(
                test_images, test_labels, self.history[0]["budget"]["test_images"], self.seed
            )
        # On a forked generator, so that a run extended later with --epochs continues the random stream
        # it would have had without this evaluation.
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            self.history[-1].update(self.validation(test_images.to(self.device), test_labels.to(self.device), "test_"))
        self.save_progress(self.history[-1], is_best=False)
        if self.tensorboard is not None:  # the epoch's other numbers were logged when it ended
            self.tensorboard.record(
                {k: v for k, v in self.history[-1].items() if k == "epoch" or k.startswith("test_")}
            )
        if self.settings.checkpoint_dir is not None and self.run.writes and self.step == 0:
            # An untrained model is never published: checkpoints/MODEL.safetensors stands for MODEL in that folder.
            console.print(
                f"nothing was trained (--epochs 0), so nothing is copied to {self.settings.checkpoint_dir}",
                markup=False,
                soft_wrap=True,
            )
        elif self.settings.checkpoint_dir is not None and self.run.writes:
            target = default_checkpoint(self.model_name, self.settings.checkpoint_dir)
            kept = publish_checkpoint(self.run.last_path, target)
            if kept is not None:
                console.print(f"{target} held another model: kept it as {kept}", markup=False, soft_wrap=True)
        return self.history


def check_parallel_settings(model_name: str, config, settings: RunSettings) -> None:
    """Refuse what data-parallel training cannot do, before any process starts working."""
    parallel = settings.parallel
    if settings.sync_batchnorm:
        if not parallel.enabled:
            raise DgmError("--sync-batchnorm only matters under torchrun with more than one process; leave it out")
        if settings.device.type != "cuda":
            raise DgmError(
                "--sync-batchnorm needs CUDA (PyTorch's SyncBatchNorm has no CPU kernel); leave it out on the CPU"
            )
        module = get_spec(model_name).module_class(config)
        if not any(isinstance(layer, torch.nn.modules.batchnorm._BatchNorm) for layer in module.modules()):
            raise DgmError(f"the {model_name} has no batch normalisation; leave out --sync-batchnorm")
    if not parallel.enabled:
        return
    if getattr(config, "minutes", 0.0):
        raise DgmError("--minutes is not supported under torchrun yet; train for --epochs")
    if settings.compile:
        raise DgmError("--compile is not supported under torchrun yet; leave it out")
    if config.batch_size < 2 * parallel.world_size:
        raise DgmError(
            f"--batch-size is the global batch and must give each of the {parallel.world_size} processes at least "
            f"two images; use --batch-size {2 * parallel.world_size} or more"
        )
