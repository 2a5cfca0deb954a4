"""Training speed: dgm's trainer against a tutorial-style loop, per model, side by side, plus the arithmetic floor.

    python benchmarks/training_speed.py --data-dir ../shared/data/mnist [--models vae,gan,flow]
        [--repeats 3] [--epoch 1] [--device cpu|cuda] [--json results.json] [--compile] [--precision fp32|tf32|bf16]

For each model it times full 50,000-image training epochs of (a) `dgm`'s own
trainer and (b) the tutorial loop of benchmarks/tutorial_loops.py, the same
architecture, batch size and optimizer. Every run trains from scratch in a
fresh worker process (so each has its own peak memory), after a warm-up of a
few hundred images in that process, and times its first epoch, or with
`--epoch N` its N-th (later epochs can be slower: subnormal numbers appear as
training settles, which dgm flushes and the tutorial loop does not). The two
kinds alternate (dgm first in even repeats, the reference first in odd ones)
so drift in the machine's speed hits both alike. It reports medians of
seconds per epoch and images/s, the ratio, peak memory, the timed epoch's
mean training loss of each (they must agree within the noise of one epoch
from different random draws, or the speed would be bought with a different
computation) and the arithmetic
floor: the training FLOPs per image (counted by torch's FlopCounterMode over
one real step of dgm's model) times 50,000, at the machine's measured float32
matrix-multiply rate.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

LOSS_METRIC = {"vae": ("train_elbo", -1.0), "gan": ("train_d_loss", 1.0), "flow": ("train_bpd", 1.0)}
# One epoch's mean loss from two different random streams: how far apart they may lie.
SAME_LOSS = {"vae": 0.03, "gan": 0.10, "flow": 0.03}  # relative
TRAIN_IMAGES = 50_000


def peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- workers (one epoch each, in their own process)


def unpacked_mnist(data_dir: str) -> str:
    """torchvision's MNIST class reads unpacked IDX files: unpack the .gz files once into a cache folder."""
    import gzip

    from dgm_cli.data import FILES, SOURCES, find_files

    target = Path(tempfile.gettempdir()) / "dgm-benchmark-mnist"
    raw = target / "MNIST" / "raw"
    if not all((raw / name.removesuffix(".gz")).exists() for name in FILES.values()):
        raw.mkdir(parents=True, exist_ok=True)
        folder = find_files(SOURCES["mnist"], Path(data_dir))
        for name in FILES.values():
            (raw / name.removesuffix(".gz")).write_bytes(gzip.decompress((folder / name).read_bytes()))
    return str(target)


def run_reference(model: str, data_dir: str, device: str, epoch: int) -> dict:
    from tutorial_loops import LOOPS

    root = unpacked_mnist(data_dir)
    LOOPS[model](root, device, limit=5)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    result = LOOPS[model](root, device, epochs=epoch)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return {**result, "peak_mb": peak_memory_mb(device)}


def run_dgm(model: str, data_dir: str, device: str, epoch: int, options: dict) -> dict:
    from rich.console import Console

    from dgm_cli.data import Dataset, Split, load_dataset
    from dgm_cli.registry import create_config
    from dgm_cli.trainer import RunSettings, train

    dataset = load_dataset("mnist", Path(data_dir))
    assert len(dataset.train) == TRAIN_IMAGES
    extra = options
    quiet = Console(file=open(os.devnull, "w"))
    with tempfile.TemporaryDirectory() as folder:
        # Warm-up: the same code on a few hundred images, so one-time costs are not timed.
        small = Split(dataset.train.images[:640], dataset.train.labels[:640])
        warm = Dataset(dataset.name, small, small, small, dataset.location)
        settings = RunSettings(Path(folder) / "warm", seed=1, device=torch.device(device), checkpoint_dir=None, **extra)
        train(model, create_config(model, epochs=1, sample_epochs=()), warm, settings, quiet)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        settings = RunSettings(Path(folder) / "run", seed=0, device=torch.device(device), checkpoint_dir=None, **extra)
        history = train(model, create_config(model, epochs=epoch, sample_epochs=()), dataset, settings, quiet)
    metric, sign = LOSS_METRIC[model]
    last = history[-1]
    return {
        "seconds": last["seconds"],
        "images": TRAIN_IMAGES,
        "loss": sign * last[metric],
        "peak_mb": peak_memory_mb(device),
    }


# ---------------------------------------------------------------- the floor


def training_flops_per_image(model_name: str, device: str) -> float:
    """FLOPs of one real training step of dgm's model (forward, backward, and the GAN's two updates) per image."""
    from torch.utils.flop_counter import FlopCounterMode

    from dgm_cli.registry import create_model

    model = create_model(model_name).to(device).train()
    model.configure_optimizers()
    batch_size = model.config.batch_size
    batch = torch.randint(0, 256, (batch_size, 28, 28), dtype=torch.uint8, device=device)
    with FlopCounterMode(display=False) as counter:
        metrics = model.training_step(batch)
        if not model.manual_optimization:
            metrics["loss"].backward()
    return counter.get_total_flops() / batch_size


def matmul_rate(device: str, size: int = 2048, repeats: int = 20) -> float:
    """Median float32 FLOP/s of a square matrix product: what the hardware does at its best."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return 2 * size**3 / statistics.median(times)


# ---------------------------------------------------------------- the orchestrator


def worker(kind: str, model: str, args) -> dict:
    command = [
        sys.executable,
        __file__,
        "--worker",
        kind,
        "--models",
        model,
        "--data-dir",
        args.data_dir,
        "--device",
        args.device,
        "--precision",
        args.precision,
        "--epoch",
        str(args.epoch),
    ]
    command += ["--compile"] if args.compile else []
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{kind} worker for {model} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--models", default="vae,gan,flow")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epoch", type=int, default=1, help="Each run trains this many epochs and times the last.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="Also write the results here.")
    parser.add_argument("--compile", action="store_true", help="dgm trains with --compile")
    parser.add_argument("--precision", default="fp32", help="dgm trains with --precision")
    parser.add_argument("--worker", choices=["dgm", "reference"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    models = args.models.split(",")

    if args.worker == "dgm":
        from dgm_cli.speed import flush_subnormals

        flush_subnormals()  # first, as the dgm command does (docs/performance.md)
        options = {"compile": args.compile, "precision": args.precision}
        print(json.dumps(run_dgm(models[0], args.data_dir, args.device, args.epoch, options)))
        return
    if args.worker == "reference":
        print(json.dumps(run_reference(models[0], args.data_dir, args.device, args.epoch)))
        return

    from dgm_cli.device import describe_device

    rate = matmul_rate(args.device)
    device_name = describe_device(torch.device(args.device))
    print(
        f"device: {device_name}; float32 matmul rate {rate / 1e9:.1f} GFLOP/s; torch {torch.__version__}",
        file=sys.stderr,
    )
    results = {
        "device": device_name,
        "torch": torch.__version__,
        "matmul_gflops": rate / 1e9,
        "epoch": args.epoch,
        "dgm_options": {"compile": args.compile, "precision": args.precision},
        "models": {},
    }
    for model in models:
        runs = {"dgm": [], "reference": []}
        for repeat in range(args.repeats):
            for kind in ("dgm", "reference") if repeat % 2 == 0 else ("reference", "dgm"):
                runs[kind].append(worker(kind, model, args))
                print(f"{model} {kind} run {repeat + 1}: {runs[kind][-1]['seconds']:.2f} s", file=sys.stderr)
        flops = training_flops_per_image(model, args.device)
        floor = flops * TRAIN_IMAGES / rate
        summary = {}
        for kind, epochs in runs.items():
            seconds = statistics.median(run["seconds"] for run in epochs)
            summary[kind] = {
                "seconds_per_epoch": seconds,
                "images_per_second": TRAIN_IMAGES / seconds,
                "peak_mb": max(run["peak_mb"] for run in epochs),
                "loss": statistics.median(run["loss"] for run in epochs),
                "epochs": epochs,
            }
        dgm, reference = summary["dgm"], summary["reference"]
        gap = abs(dgm["loss"] - reference["loss"]) / abs(reference["loss"])
        results["models"][model] = {
            **summary,
            "speedup": reference["seconds_per_epoch"] / dgm["seconds_per_epoch"],
            "training_mflops_per_image": flops / 1e6,
            "floor_seconds_per_epoch": floor,
            "dgm_over_floor": dgm["seconds_per_epoch"] / floor,
            "loss_relative_gap": gap,
            "same_loss": gap <= SAME_LOSS[model],
        }

    which = "first epoch" if args.epoch == 1 else f"epoch {args.epoch}"
    print(
        f"\n{device_name}, torch {torch.__version__}, medians of {args.repeats} runs' {which} of 50,000 images; "
        f"floor at {rate / 1e9:.1f} GFLOP/s; dgm with precision {args.precision}"
        + (", compiled" if args.compile else "")
    )
    print(
        "| model | dgm s/epoch | reference s/epoch | speed-up | dgm img/s | reference img/s | dgm peak MB | "
        f"reference peak MB | MFLOP/image | floor s/epoch | dgm / floor | loss dgm / reference (epoch {args.epoch}) |"
    )
    print("| --- " * 12 + "|")
    for model, r in results["models"].items():
        d, ref = r["dgm"], r["reference"]
        same = "same" if r["same_loss"] else "DIFFERENT"
        print(
            f"| {model} | {d['seconds_per_epoch']:.2f} | {ref['seconds_per_epoch']:.2f} | {r['speedup']:.2f}x | "
            f"{d['images_per_second']:,.0f} | {ref['images_per_second']:,.0f} | {d['peak_mb']:,.0f} | "
            f"{ref['peak_mb']:,.0f} | {r['training_mflops_per_image']:.2f} | {r['floor_seconds_per_epoch']:.2f} | "
            f"{r['dgm_over_floor']:.2f}x | {d['loss']:.3f} / {ref['loss']:.3f} ({same}) |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
