"""How long `dgm eval NAME` (at its defaults, or with --minutes M) takes for every pretrained model, whole
commands timed.

    python benchmarks/eval_minutes.py --data-dir ../shared/data/mnist --out eval-minutes.json

Each model is evaluated in a fresh process (Python's start-up, reading MNIST and loading the model included),
one after another, with --threads threads. The record holds, per model, the command's seconds, what the budget
chose (test images, samples), the seconds it expected, and the full protocol's seconds it measured; the table
printed at the end is docs/performance.md's.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def evaluate(name: str, args) -> dict:
    command = [sys.executable, "-m", "dgm_cli", "eval", name, "--json", "--data-dir", str(args.data_dir)]
    command += [] if args.minutes is None else ["--minutes", str(args.minutes)]
    environment = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=environment)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"dgm eval {name} failed: {done.stderr.strip().splitlines()[-1]}")
    report = json.loads(done.stdout)
    likelihood, quality = report.get("likelihood") or {}, report.get("sample_quality") or {}
    budget = report.get("budget") or {}
    return {
        "model": name,
        "command_seconds": round(seconds, 1),
        "test_images": likelihood.get("images") or (report.get("classification") or {}).get("images"),
        "samples": quality.get("samples", 0),
        "expected_seconds": budget.get("expected_seconds"),
        "full_protocol_seconds": budget.get("full_protocol_seconds"),
        "full_protocol": budget.get("full_protocol", True),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, help="A budget; left out, dgm eval's default (a minute).")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True, help="The JSON record to write.")
    args = parser.parse_args()
    import dgm_cli as dgm

    rows = [evaluate(entry["name"], args) for entry in dgm.list_pretrained()]
    record = {"minutes": args.minutes, "threads": args.threads, "command": " ".join(sys.argv), "models": rows}
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print("| model | whole command | test images | samples | the full protocol? | full protocol here |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        full = row["full_protocol_seconds"]
        print(
            f"| `{row['model']}` | {row['command_seconds']:.0f} s | {row['test_images'] or '-'} | "
            f"{row['samples'] or '-'} | {'yes' if row['full_protocol'] else 'no'} | "
            f"{'-' if full is None else f'{full / 60:.1f} min'} |"
        )


if __name__ == "__main__":
    main()
