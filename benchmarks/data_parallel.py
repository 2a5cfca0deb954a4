"""Data-parallel speed-up: `dgm train` in one process against torchrun with N processes, same global batch.

    python benchmarks/data_parallel.py --data-dir ../shared/data/mnist [--models vae,gan,flow]
        [--epochs 3] [--processes 2] [--device cpu|cuda] [--json results.json]

For each model it trains the same run twice through the real command line:
once as `python -m dgm_cli train MODEL ...` and once as `torchrun --standalone
--nproc-per-node N -m dgm_cli train MODEL ...` (on the CPU torchrun gives
each process one thread, the single process keeps torch's default of one per
core). It reports the median training seconds per epoch (from metrics.jsonl,
the first epoch left out as warm-up when there are several), the speed-up,
and the last epoch's validation metric of both runs, which must agree: the
processes compute what one process computes, up to floating-point order
(and, for the GAN, BatchNorm over each process's shard).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VALIDATION_METRIC = {"vae": "val_elbo", "gan": "val_d_loss", "flow": "val_bpd"}


def train(model: str, args, folder: Path, processes: int) -> list[dict]:
    launcher = [sys.executable, "-m", "dgm_cli"]
    if processes > 1:
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={processes}",
            "-m",
            "dgm_cli",
        ]
    command = [
        *launcher,
        "train",
        model,
        "--epochs",
        str(args.epochs),
        "--sample-epochs",
        "0",
        "--device",
        args.device,
        "--out",
        str(folder / "run"),
        "--checkpoint-dir",
        str(folder / "checkpoints"),
        "--dataset",
        "mnist",
    ]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, capture_output=True, text=True, env=environment)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return [json.loads(line) for line in (folder / "run" / "metrics.jsonl").read_text().splitlines()][1:]


def epoch_seconds(history: list[dict]) -> float:
    timed = history[1:] if len(history) > 1 else history
    return statistics.median(record["seconds"] for record in timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir")
    parser.add_argument("--models", default="vae,gan,flow")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json")
    args = parser.parse_args()

    rows = []
    for model in args.models.split(","):
        with tempfile.TemporaryDirectory() as scratch:
            one = train(model, args, Path(scratch) / "one", 1)
            many = train(model, args, Path(scratch) / "many", args.processes)
        metric = VALIDATION_METRIC[model]
        rows.append(
            {
                "model": model,
                "epochs": args.epochs,
                "processes": args.processes,
                "device": args.device,
                "one_process_seconds": epoch_seconds(one),
                "parallel_seconds": epoch_seconds(many),
                "speedup": epoch_seconds(one) / epoch_seconds(many),
                "metric": metric,
                "one_process_metric": one[-1][metric],
                "parallel_metric": many[-1][metric],
            }
        )
        print(f"{model}: done", file=sys.stderr)

    print(
        f"| model | s/epoch, 1 process | s/epoch, {args.processes} processes | speed-up | "
        f"last validation metric, 1 process | same, {args.processes} processes |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['model']} | {row['one_process_seconds']:.2f} | {row['parallel_seconds']:.2f} | "
            f"{row['speedup']:.2f}x | {row['metric']} {row['one_process_metric']:.4f} | {row['parallel_metric']:.4f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
