"""What flushing subnormal numbers to zero buys late in training, and that it changes no result.

    python benchmarks/subnormals.py --run RUN_FOLDER --data-dir ../shared/data/mnist [--repeats 2]

RUN_FOLDER is a finished or interrupted `dgm train` run (its state.safetensors),
for instance one of `dgm reproduce`'s runs in docs/report/runs/. Each repeat
copies it to a temporary folder and trains one more epoch from the saved
state with `dgm train MODEL --resume COPY --epochs N+1`, once with dgm's
default (subnormals flushed) and once with subnormal arithmetic left on; the
two alternate, each in a fresh process. Both continue from the same weights,
optimizer moments and random state, so they compute the same epoch: the table
gives the median seconds of each, the ratio, and the largest relative
difference between the epoch's recorded metrics over all runs. It first
counts the subnormal values in the saved state (the model's tensors, and each
kind of optimizer moment), to show where they are.
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

# `dgm` itself, with the subnormal setting chosen after main() has made its own.
ENTRY = """
import sys
import torch
from dgm_cli import cli
flush = sys.argv.pop(1) == "flush"
cli.flush_subnormals = lambda: torch.set_flush_denormal(flush)
sys.argv[0] = "dgm"
cli.main()
"""


def subnormal_values(run: Path) -> dict[str, tuple[int, int]]:
    """In the run's saved training state: per kind of tensor (the model's own, or an optimizer's
    exp_avg, exp_avg_sq, ...), how many float values are subnormal, out of how many."""
    import torch
    from safetensors import safe_open

    from dgm_cli.state import STATE_FILE

    counts: dict[str, tuple[int, int]] = {}
    with safe_open(str(run / STATE_FILE), framework="pt") as state:
        for key in state.keys():
            tensor = state.get_tensor(key)
            if not tensor.is_floating_point():
                continue
            kind = key.split(".")[0] if key.startswith("model.") else key.split(".")[0] + " " + key.split(".")[-1]
            smallest_normal = torch.finfo(tensor.dtype).tiny
            subnormal = int(((tensor != 0) & (tensor.abs() < smallest_normal)).sum())
            before = counts.get(kind, (0, 0))
            counts[kind] = (before[0] + subnormal, before[1] + tensor.numel())
    return counts


def one_more_epoch(run: Path, model: str, epochs_done: int, data_dir: str, flush: bool) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "run"
        shutil.copytree(run, copy)
        command = [
            sys.executable,
            "-c",
            ENTRY,
            "flush" if flush else "keep",
            "train",
            model,
            "--resume",
            str(copy),
            "--epochs",
            str(epochs_done + 1),
            "--data-dir",
            data_dir,
        ]
        done = subprocess.run(command, capture_output=True, text=True, cwd=HERE.parent)
        if done.returncode != 0:
            raise SystemExit(f"dgm train failed:\n{done.stderr[-3000:]}")
        return json.loads((copy / "metrics.jsonl").read_text().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    model = json.loads((args.run / "config.json").read_text())["model"]
    epochs_done = json.loads((args.run / "metrics.jsonl").read_text().splitlines()[-1])["epoch"]

    for kind, (subnormal, total) in subnormal_values(args.run).items():
        print(f"saved state, {kind}: {subnormal:,} of {total:,} values subnormal")
    records = {True: [], False: []}
    for repeat in range(args.repeats):
        for flush in (True, False) if repeat % 2 == 0 else (False, True):
            records[flush].append(one_more_epoch(args.run, model, epochs_done, args.data_dir, flush))
            print(
                f"epoch {epochs_done + 1}, subnormals {'flushed' if flush else 'kept'}: "
                f"{records[flush][-1]['seconds']:.2f} s",
                file=sys.stderr,
            )

    metrics = sorted(k for k in records[True][0] if k.startswith(("train_", "val_")))
    runs = records[True] + records[False]
    gap = max(abs(run[k] - runs[0][k]) / abs(runs[0][k]) for k in metrics for run in runs)
    flushed, kept = (statistics.median(r["seconds"] for r in records[flag]) for flag in (True, False))
    print(f"\n{model}, epoch {epochs_done + 1} resumed from {args.run}, medians of {args.repeats}")
    print(
        "| model | epoch | flushed (dgm) s | kept s | speed-up | largest relative difference of the recorded metrics |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    print(
        f"| {model} | {epochs_done + 1} | {flushed:.2f} | {kept:.2f} | {kept / flushed:.2f}x | "
        f"{gap:.1e} ({', '.join(metrics)}) |"
    )


if __name__ == "__main__":
    main()
