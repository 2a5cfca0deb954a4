"""One call that says how dgm does on a GPU: its device tests, then one timed epoch of each model per setting.

    python benchmarks/gpu_check.py --data-dir DIR --json gpu_check.json            # on a CUDA device, at most 8 min
    python benchmarks/gpu_check.py --reduced --json gpu_check.json                  # on the CPU, a few minutes

1. The tests that depend on the device (tests/test_device.py: training, resume
   with the CUDA generator state, every precision the device allows, seeded
   sampling and the likelihood estimators against the CPU, checkpoints written
   from device tensors) run under pytest with DGM_TEST_DEVICE set to the device.
2. For each model (the VAE, the GAN, the seed's MLP flow, the multi-scale flow)
   and each setting the device allows (fp32; tf32 and bf16 on CUDA, bf16 on the
   CPU, neither for the flows where refused; fp32 with --compile), one epoch of
   the full 50,000-image training split is timed after a warm-up on 640 images
   in the same process, as benchmarks/training_speed.py does, with the peak
   device memory of the timed epoch.
`--reduced` (the default on a machine without CUDA) takes the bundled
mnist-mini subset's 5,000 images and leaves out --compile, so the script can be
tried where there is no GPU. Settings that would start after the time budget
(--budget, 8 minutes) are listed as skipped rather than run. Everything goes
into one JSON file; a table is printed at the end.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

# (label, model, config overrides); the flows' epochs are the longest, so they come last.
MODELS = (
    ("vae", "vae", {}),
    ("gan", "gan", {}),
    ("flow", "flow", {}),
    ("flow-ms", "flow", {"arch": "realnvp-ms"}),
)
LOSS = {"vae": "train_elbo", "gan": "train_d_loss", "flow": "train_bpd"}


def settings_for(device: torch.device, model: str, reduced: bool) -> list[dict]:
    from dgm_cli.registry import get_spec
    from dgm_cli.speed import PRECISIONS, check_precision

    chosen = []
    for precision in PRECISIONS:
        try:
            check_precision(precision, device, get_spec(model).module_class)
        except Exception:  # a DgmError: not offered on this device or for this model
            continue
        chosen.append({"precision": precision, "compile": False})
    if not reduced:
        chosen.append({"precision": "fp32", "compile": True})
    return chosen


def run_tests(device: torch.device, seconds_left: float) -> dict:
    started = time.perf_counter()
    env = {**os.environ, "DGM_TEST_DEVICE": str(device), "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(REPO / "tests" / "test_device.py")]
    try:
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=max(30, seconds_left))
        output, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as stopped:
        output, code = (stopped.stdout or b"").decode() + "\n(timed out)", -1
    summary = [line for line in output.splitlines() if " passed" in line or " failed" in line or " error" in line]
    return {
        "exit_code": code,
        "summary": summary[-1] if summary else "",
        "seconds": round(time.perf_counter() - started, 1),
        "output_tail": output[-4000:],
    }


def time_epoch(label: str, model: str, overrides: dict, setting: dict, dataset, device: torch.device) -> dict:
    """One warm-up, then one timed epoch of the whole training split, in this process."""
    from rich.console import Console

    from dgm_cli.data import Dataset, Split
    from dgm_cli.registry import create_config
    from dgm_cli.trainer import RunSettings, train

    quiet = Console(file=open(os.devnull, "w"))
    with tempfile.TemporaryDirectory() as folder:
        small = Split(dataset.train.images[:640], dataset.train.labels[:640])
        warm = Dataset(dataset.name, small, small, small, dataset.location)
        config = dict(overrides, sample_epochs=())
        run = RunSettings(Path(folder) / "warm", seed=1, device=device, checkpoint_dir=None, **setting)
        train(model, create_config(model, **config, epochs=1), warm, run, quiet)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
        run = RunSettings(Path(folder) / "run", seed=0, device=device, checkpoint_dir=None, **setting)
        last = train(model, create_config(model, **config, epochs=1), dataset, run, quiet)[-1]
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {
        "model": label,
        **setting,
        "images": len(dataset.train),
        "seconds_per_epoch": last["seconds"],
        "images_per_second": last["images_per_second"],
        "peak_mb": peak,
        "loss": last[LOSS[model]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="Folder with MNIST/raw/*.gz (needed unless --reduced).")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--reduced", action="store_true", help="mnist-mini, no --compile (the default without CUDA).")
    parser.add_argument("--budget", type=float, default=480.0, help="Seconds for the whole check.")
    parser.add_argument("--skip-tests", action="store_true", help="Only the timings.")
    parser.add_argument("--json", default="gpu_check.json", help="Where the results go.")
    args = parser.parse_args()

    from dgm_cli.data import load_dataset
    from dgm_cli.device import describe_device, resolve_device
    from dgm_cli.speed import flush_subnormals

    flush_subnormals()  # as the dgm command does, before any thread starts
    started = time.perf_counter()
    device = resolve_device(args.device)
    reduced = args.reduced or device.type != "cuda"
    if not reduced and not args.data_dir:
        parser.error("--data-dir is needed for the full check (or pass --reduced)")
    dataset = load_dataset("mnist-mini" if reduced else "mnist", None if reduced else Path(args.data_dir))
    results = {
        "device": describe_device(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "mode": "reduced" if reduced else "full",
        "dataset": dataset.name,
        "budget_seconds": args.budget,
    }
    print(f"{results['device']}, torch {torch.__version__}, {results['mode']} check on {dataset.name}", file=sys.stderr)
    if not args.skip_tests:
        # The tests get at most a third of the budget; the timings need the rest.
        results["tests"] = run_tests(device, args.budget / 3)
        print(f"tests: {results['tests']['summary']} ({results['tests']['seconds']} s)", file=sys.stderr)
    results["timings"], results["skipped"] = [], []
    for label, model, overrides in MODELS:
        for setting in settings_for(device, model, reduced):
            spent = time.perf_counter() - started
            typical = max([t["seconds_per_epoch"] for t in results["timings"] if t["model"] == label] or [0.0])
            if spent + 2 * typical > args.budget:  # the warm-up, the epoch and validation: about twice an epoch
                results["skipped"].append({"model": label, **setting, "reason": f"time budget ({spent:.0f} s spent)"})
                continue
            try:
                timing = time_epoch(label, model, overrides, setting, dataset, device)
            except Exception as error:  # one failing setting must not hide the others' numbers
                timing = {"model": label, **setting, "error": " ".join(str(error).split())[:300]}
            results["timings"].append(timing)
            print(json.dumps(timing), file=sys.stderr)
            Path(args.json).write_text(json.dumps(results, indent=2))  # partial results survive a kill
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    Path(args.json).write_text(json.dumps(results, indent=2))

    print(
        f"\n{results['device']}, torch {torch.__version__}, one epoch of {len(dataset.train):,} {dataset.name} images"
    )
    print("| model | precision | compile | s/epoch | images/s | peak MB | train loss |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for t in results["timings"]:
        if "error" in t:
            print(f"| {t['model']} | {t['precision']} | {t['compile']} | error: {t['error'][:80]} | | | |")
            continue
        peak = "-" if t["peak_mb"] is None else f"{t['peak_mb']:,.0f}"
        print(
            f"| {t['model']} | {t['precision']} | {'yes' if t['compile'] else 'no'} | {t['seconds_per_epoch']:.2f} | "
            f"{t['images_per_second']:,.0f} | {peak} | {t['loss']:.4f} |"
        )
    for s in results["skipped"]:
        print(f"skipped {s['model']} {s['precision']}{' compiled' if s['compile'] else ''}: {s['reason']}")
    failed = "tests" in results and results["tests"]["exit_code"] != 0
    if failed:
        print(f"device tests failed: {results['tests']['summary']}", file=sys.stderr)
    sys.exit(1 if failed or any("error" in t for t in results["timings"]) else 0)


if __name__ == "__main__":
    main()
