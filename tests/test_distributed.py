"""Data-parallel training under torchrun (2 CPU processes, gloo): the ranks agree and equal one process.

Each test starts real torchrun processes, the way a user launches them.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dgm_cli.distributed import Parallel
from dgm_cli.errors import DgmError
from dgm_cli.progress import quiet_console
from dgm_cli.registry import create_config, create_model
from dgm_cli.trainer import RunSettings, check_parallel_settings, train

sys.path.insert(0, str(Path(__file__).parent))
from distributed_data import small_dataset  # noqa: E402

WORKER = Path(__file__).parent / "distributed_worker.py"
TRAIN_IMAGES = 530  # five global batches of 101 and a last one of 25: shards of 50/51 and 12/13 images
SMALL = {
    "vae": {"hidden": 32, "zdim": 4, "epochs": 1, "batch_size": 101, "sample_epochs": ()},
    "flow": {"hidden": 16, "couplings": 2, "epochs": 1, "batch_size": 101, "sample_epochs": ()},
    # Adam turns float-rounding differences in near-zero gradients into steps of up to lr, so the
    # multi-scale flow, whose actnorm layers start from the first batch's statistics, is compared at a
    # tiny rate: what it checks is that every process starts its actnorm layers from the global batch.
    "flow-ms": {
        "arch": "realnvp-ms",
        "steps": 1,
        "channels": 8,
        "epochs": 1,
        "batch_size": 101,
        "lr": 1e-7,
        "sample_epochs": (),
    },
    "gan": {"latent_dim": 8, "ema": 0.9, "epochs": 1, "batch_size": 101, "sample_epochs": ()},
    # A conditional model's labels are sharded with its images: each process scores its rows under their own labels.
    "vae-conditional": {
        "hidden": 32,
        "zdim": 4,
        "epochs": 1,
        "batch_size": 101,
        "sample_epochs": (),
        "conditional": True,
    },
    # The diffusion model steps its own optimizer and average (like the GAN) through one wrapped network.
    # Its zero-initialised output layers get near-zero gradients that Adam turns into full steps, so it is
    # compared at a tiny rate, like the multi-scale flow; its losses (below) show the noise is the global batch's.
    "diffusion": {
        "width": 4,
        "timesteps": 10,
        "sample_steps": 2,
        "epochs": 1,
        "batch_size": 101,
        "lr": 1e-7,
        "sample_epochs": (),
    },
}


def torchrun(*arguments: str) -> list[str]:
    """torchrun for one machine; --standalone lets it pick a free port itself."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *arguments]


def environment() -> dict:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory) -> Path:
    """Every case of SMALL trained data-parallel in one torchrun launch (the worker trains them in turn):
    OUT/CASE/rank<R>.safetensors and OUT/CASE/run. One launch, not one per case: start-up is most of each."""
    out = tmp_path_factory.mktemp("two-processes")
    cases = {name: [name.split("-")[0], config] for name, config in SMALL.items()}
    done = subprocess.run(
        torchrun(str(WORKER), str(out), json.dumps(cases), str(TRAIN_IMAGES)),
        capture_output=True,
        text=True,
        timeout=600,
        env=environment(),
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert_finished_cleanly(done)
    return out


def ranks(two_process_runs: Path, case: str) -> tuple[dict, dict]:
    rank0, rank1 = (load_file(two_process_runs / case / f"rank{rank}.safetensors") for rank in (0, 1))
    assert rank0.keys() == rank1.keys()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), f"{name} differs between the ranks"
    return rank0, rank1


def one_process(model_name: str, out: Path) -> dict:
    model = model_name.split("-")[0]
    settings = RunSettings(out_dir=out, seed=3, device=torch.device("cpu"), checkpoint_dir=None)
    train(model, create_config(model, **SMALL[model_name]), small_dataset(TRAIN_IMAGES), settings, quiet_console())
    return load_file(out / "last.safetensors")


@pytest.mark.parametrize("model_name", ["vae", "flow", "flow-ms", "vae-conditional", "diffusion"])
def test_two_processes_compute_what_one_process_computes(model_name, two_process_runs, tmp_path):
    rank0, _ = ranks(two_process_runs, model_name)
    single = one_process(model_name, tmp_path / "one")
    assert single.keys() == rank0.keys()
    for name in single:
        torch.testing.assert_close(rank0[name], single[name], rtol=1e-4, atol=1e-5, msg=name)
    # The epoch's training and validation metrics: every step's noise and shards added up as one process's.
    two, one = (
        json.loads((folder / "metrics.jsonl").read_text().splitlines()[1])
        for folder in (two_process_runs / model_name / "run", tmp_path / "one")
    )
    for name in (key for key in one if key.startswith(("train_", "val_"))):
        assert two[name] == pytest.approx(one[name], rel=1e-4), name


def test_gan_ranks_end_with_the_same_weights(two_process_runs):
    """The GAN's BatchNorm normalises each shard (no SyncBatchNorm on the CPU), so only rank agreement holds."""
    ranks(two_process_runs, "gan")


def test_shards_cover_every_batch_once_with_sizes_differing_by_at_most_one():
    for world_size in (1, 2, 3, 8):
        for size in (world_size, 17, 101, 128):
            shards = [Parallel(rank, world_size).rows(size) for rank in range(world_size)]
            rows = [row for shard in shards for row in range(size)[shard]]
            assert rows == list(range(size))
            lengths = {shard.stop - shard.start for shard in shards}
            assert max(lengths) - min(lengths) <= 1
            if world_size > 1:  # the loss weights turn the ranks' average into the batch mean
                weights = [Parallel(rank, world_size).shard(size).loss_weight for rank in range(world_size)]
                means_weighted = sum(w * (s.stop - s.start) for w, s in zip(weights, shards)) / world_size
                assert means_weighted == pytest.approx(sum((s.stop - s.start) ** 2 for s in shards) / size)


def test_each_process_draws_its_rows_of_the_global_batch_noise():
    model = create_model("vae", hidden=8, zdim=2)
    draw = lambda rows: torch.randn(rows, 3)  # noqa: E731
    torch.manual_seed(0)
    whole = model.batch_noise(draw, 101)
    parts = []
    for rank in range(2):
        torch.manual_seed(0)
        model.shard = Parallel(rank, 2).shard(101)
        parts.append(model.batch_noise(draw, model.shard.stop - model.shard.start))
    assert torch.equal(torch.cat(parts), whole)


def test_settings_that_cannot_run_data_parallel_are_refused_with_what_to_do():
    config = create_config("vae", batch_size=3)
    two = Parallel(0, 2)

    def refusal(**changes):
        settings = RunSettings(out_dir=Path("run"), seed=0, device=torch.device("cpu"), checkpoint_dir=None, **changes)
        with pytest.raises(DgmError) as error:
            check_parallel_settings("vae", config, settings)
        return str(error.value)

    assert "--batch-size 4 or more" in refusal(parallel=two)
    assert "--compile" in refusal(parallel=two, compile=True)
    assert "needs CUDA" in refusal(parallel=two, sync_batchnorm=True)
    assert "only matters under torchrun" in refusal(sync_batchnorm=True)


def test_one_gpu_named_for_every_process_is_refused(monkeypatch):
    from dgm_cli import distributed

    for name, value in {
        "RANK": "1",
        "WORLD_SIZE": "2",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29500",
    }.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(DgmError, match="pass --device cuda"):
        distributed.start("cuda:0")


def cli(*arguments: str, out: Path, processes: int) -> subprocess.CompletedProcess:
    command = torchrun("-m", "dgm_cli", *arguments) if processes == 2 else [sys.executable, "-m", "dgm_cli", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=240, env=environment(), cwd=out)


VAE_OPTIONS = (
    "--dataset",
    "mnist-mini",
    "--hidden",
    "32",
    "--zdim",
    "4",
    "--batch-size",
    "101",
    "--device",
    "cpu",
    "--checkpoint-dir",
    "checkpoints",
    "--sample-epochs",
    "0,2",
)


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_finished_cleanly(done: subprocess.CompletedProcess) -> None:
    """A finished launch exits 0 with nothing from C++ on stderr. A finished run once died of SIGABRT after
    "done" on 1 launch in 8 (the DistributedDataParallel wrapper, kept by reference cycles, was freed at
    interpreter exit after the process group); distributed.stop now collects it first
    (test_the_data_parallel_wrapper_is_freed_before_the_process_group), and every finished launch of this
    module checks that it stays so."""
    assert done.returncode == 0, done.stderr[-3000:]
    assert "terminate called" not in done.stderr, done.stderr[-3000:]


CLI_EPOCHS = "12"  # enough that a Ctrl-C after epoch 1 lands well before the end


@pytest.fixture(scope="module")
def whole_cli_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One uninterrupted `dgm train vae` under torchrun that the tests below read: the folder holding its run
    `whole`, and the finished launch."""
    folder = tmp_path_factory.mktemp("torchrun-cli")
    done = cli(
        "train", "vae", *VAE_OPTIONS, "--epochs", CLI_EPOCHS, "--out", "whole", "--json", out=folder, processes=2
    )
    assert_finished_cleanly(done)
    return folder, done


def test_torchrun_cli_trains_like_one_process_and_only_rank_0_speaks_and_writes(whole_cli_run, tmp_path):
    folder, two = whole_cli_run
    assert len(two.stdout.strip().splitlines()) == 1  # one JSON object, from rank 0
    assert json.loads(two.stdout)["final"]["epoch"] == int(CLI_EPOCHS)
    assert two.stderr.count("done: ") == 1 and "x 2 processes (torchrun)" in two.stderr
    assert sorted(p.name for p in (folder / "whole").iterdir()) == [
        "best.safetensors",
        "config.json",
        "curves.png",
        "last.safetensors",
        "metrics.jsonl",
        "samples",
        "state.safetensors",
    ]
    assert json.loads((folder / "whole" / "config.json").read_text())["processes"] == 2
    # The first epochs of a one-process run (a constant learning rate: they do not depend on the run's length).
    one = cli("train", "vae", *VAE_OPTIONS, "--epochs", "3", "--out", "run", out=tmp_path, processes=1)
    assert one.returncode == 0, one.stderr[-3000:]
    for parallel, single in zip(metrics(folder / "whole")[:4], metrics(tmp_path / "run"), strict=True):
        for name, value in single.items():
            if name not in ("seconds", "images_per_second") and not name.startswith("test_"):  # the run's end
                assert parallel[name] == pytest.approx(value, rel=1e-4, abs=1e-4), name


def test_the_data_parallel_wrapper_is_freed_before_the_process_group():
    """distributed.stop collects the cycle that keeps a DistributedDataParallel wrapper alive after training."""
    import gc
    import weakref

    from dgm_cli import distributed as dgm_distributed

    store = torch.distributed.HashStore()
    torch.distributed.init_process_group("gloo", store=store, rank=0, world_size=1)
    gc.disable()
    try:
        wrapper = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 3))
        wrapper(torch.randn(2, 3)).sum().backward()
        # Its reducer's hooks usually form such a cycle already; one made here makes the test independent of
        # PyTorch's internals (and of what earlier tests left in this process).
        wrapper.__dict__["cycle"] = wrapper
        alive = weakref.ref(wrapper)
        del wrapper
        assert alive() is not None  # plain reference counting does not free a cycle
        dgm_distributed.stop(finished=True)
    finally:
        gc.enable()
    assert alive() is None and not torch.distributed.is_initialized()


def test_ctrl_c_to_torchrun_saves_once_and_resume_under_torchrun_ends_where_an_uninterrupted_run_does(
    whole_cli_run, tmp_path
):
    whole = whole_cli_run[0] / "whole"
    command = torchrun("-m", "dgm_cli", "train", "vae", *VAE_OPTIONS, "--epochs", CLI_EPOCHS, "--out", "cut")
    launcher = subprocess.Popen(
        command, cwd=tmp_path, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    state = tmp_path / "cut" / "state.safetensors"
    deadline = time.monotonic() + 120
    while not state.exists() and time.monotonic() < deadline:  # after epoch 1 has been saved
        time.sleep(0.05)
    launcher.send_signal(signal.SIGINT)
    _, stderr = launcher.communicate(timeout=120)
    assert launcher.returncode != 0
    assert stderr.count("continue with: dgm train vae --resume cut") == 1, stderr[-3000:]
    assert not (tmp_path / "cut" / "train.lock").exists()
    stopped_at = len(metrics(tmp_path / "cut"))
    assert stopped_at < int(CLI_EPOCHS) + 1, "the run finished before the signal; nothing was interrupted"

    resumed = cli("train", "vae", "--resume", "cut", out=tmp_path, processes=2)
    assert_finished_cleanly(resumed)
    final, reference = load_file(tmp_path / "cut" / "last.safetensors"), load_file(whole / "last.safetensors")
    for name in reference:
        assert torch.equal(final[name], reference[name]), name
    timing = ("seconds", "images_per_second")
    strip = lambda history: [{k: v for k, v in r.items() if k not in timing} for r in history]  # noqa: E731
    assert strip(metrics(tmp_path / "cut")) == strip(metrics(whole))


def test_commands_other_than_train_refuse_to_run_as_several_copies(monkeypatch):
    from typer.testing import CliRunner

    from dgm_cli.cli import app

    monkeypatch.setenv("WORLD_SIZE", "2")
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: only dgm train runs data-parallel; run dgm models without torchrun"
