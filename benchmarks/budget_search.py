"""Which configuration of a family trains the best model in M minutes on a CPU core: a grid search, recorded,
scored on the validation split alone.

    python benchmarks/budget_search.py diffusion --minutes 5 --data-dir ../shared/data/mnist \\
        --out ~/dgm-runs/search/diffusion-5 --record docs/performance/search/diffusion-5-minutes.json

Every configuration of the family's grid (GRIDS) trains as `dgm train FAMILY --minutes M OPTIONS --seed 0`
with one thread, two at a time, each pinned to a core of its own (as benchmarks/peers.py runs dgm beside a
peer), and is then scored on the validation split, which no configuration trains on:
- diffusion, gan: FID in the shipped classifier's feature space of --samples samples (the diffusion model's
  default sampler at 50 steps) against the 10,000 validation digits;
- vae: the importance-weighted NLL (k = 100) of --images validation digits (a seeded subset);
- flow: bits/dim of the 10,000 validation digits, one dequantization draw each.
Selection never reads the test split (a run's own record ends with its test metrics, which the search
ignores); the chosen configuration meets the test split once, in benchmarks/peers.py. The record holds every
configuration's options, steps and validation score, best first, and the command that made it. Run again with
the same OUT, the search trains only the configurations without a result there: a grid extended by a second
round around the first round's best adds those. `--configs "A;B"` searches only those configurations of the
grid (names hold commas, so a semicolon separates them), as at a long budget, the finalists of a shorter one:

    python benchmarks/budget_search.py flow --minutes 60 \\
        --configs "tutorial-multiscale network, lr 2e-3;realnvp-ms, lr 4e-3" \\
        --data-dir ../shared/data/mnist --out ~/dgm-runs/search/flow-60 \\
        --record docs/performance/search/flow-60-minutes.json
"""

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from peers import launch, wait  # one thread, pinned to a core: the same conditions as the peer table

from dgm_cli.models.flow import TUTORIAL_MULTISCALE_NETWORK  # the course tutorial's multi-scale network

SAMPLE_STEPS = 50

# Each grid starts from the family's defaults ("defaults"); the others change what a short budget is most
# sensitive to: the network's width (steps per second), the learning rate, the batch, and for diffusion the
# noise schedule and the weights' moving average.
GRIDS = {
    "diffusion": {
        "defaults": {},
        "lr 1e-3": {"lr": 1e-3},
        "width 16, lr 1e-3": {"width": 16, "lr": 1e-3},
        "width 16, lr 2e-3": {"width": 16, "lr": 2e-3},
        "width 8, lr 2e-3": {"width": 8, "lr": 2e-3},
        "width 16, lr 1e-3, batch 64": {"width": 16, "lr": 1e-3, "batch_size": 64},
        "width 16, lr 1e-3, cosine": {"width": 16, "lr": 1e-3, "schedule": "cosine"},
        "width 16, lr 1e-3, ema 0.99": {"width": 16, "lr": 1e-3, "ema": 0.99},
        # The second round, around the first's best: width 16 with a smaller batch or a larger learning rate
        # (both at the edge of the first grid), and a width between.
        "width 16, lr 4e-3": {"width": 16, "lr": 4e-3},
        "width 24, lr 2e-3": {"width": 24, "lr": 2e-3},
        "width 16, lr 2e-3, batch 64": {"width": 16, "lr": 2e-3, "batch_size": 64},
        "width 16, lr 1e-3, batch 32": {"width": 16, "lr": 1e-3, "batch_size": 32},
        # At 15 minutes, beside the five-minute search's two best and the defaults: a wider network in the
        # winner's small batches, which three times the steps may now afford.
        "width 24, lr 1e-3, batch 32": {"width": 24, "lr": 1e-3, "batch_size": 32},
    },
    # The flow at 15 minutes: the seed's MLP RealNVP (the defaults; 18M parameters, about 14 epochs on a core
    # beside another run), the multi-scale flow (160,000 parameters, the same FLOPs an image, about 7 epochs) at
    # two learning rates, and the course tutorial's multi-scale network (gated coupling networks, variational
    # dequantization; 15 times realnvp-ms's FLOPs an image, one epoch) with the budget's schedule instead of its
    # 200 epochs'.
    "flow": {
        "realnvp-ms": {"arch": "realnvp-ms"},
        "tutorial-multiscale network": TUTORIAL_MULTISCALE_NETWORK,
        "defaults": {},
        "realnvp-ms, lr 2e-3": {"arch": "realnvp-ms", "lr": 2e-3},
        # The second round: the first's best at the edge of its learning rates, and the runner-up at the
        # rate that helped it.
        "realnvp-ms, lr 4e-3": {"arch": "realnvp-ms", "lr": 4e-3},
        "tutorial-multiscale network, lr 2e-3": {**TUTORIAL_MULTISCALE_NETWORK, "lr": 2e-3},
    },
    "gan": {
        "defaults": {},
        "ema 0.999": {"ema": 0.999},
        "ema 0.99": {"ema": 0.99},
        "lr 5e-4, ema 0.999": {"lr": 5e-4, "ema": 0.999},
        "batch 128, lr 4e-4, ema 0.999": {"batch_size": 128, "lr": 4e-4, "ema": 0.999},
        "batch 32, ema 0.999": {"batch_size": 32, "ema": 0.999},
    },
    "vae": {
        "defaults": {},
        "lr 2e-3": {"lr": 2e-3},
        "batch 256, lr 2e-3": {"batch_size": 256, "lr": 2e-3},
        "batch 64": {"batch_size": 64},
        "hidden 1000": {"hidden": 1000},
        "hidden 1000, batch 256, lr 2e-3": {"hidden": 1000, "batch_size": 256, "lr": 2e-3},
    },
}


def options(overrides: dict) -> list[str]:
    return [f"--{key.replace('_', '-')}={value}" for key, value in overrides.items()]


def score(family: str, folder: Path, args) -> dict:
    """The trained model's validation score (lower is better) and what it is."""
    import torch

    import dgm_cli as dgm
    from dgm_cli.feature_network import feature_network
    from dgm_cli.metrics import sample_quality

    model = dgm.load(folder / "last.safetensors", device="cpu")
    dataset = dgm.load_dataset("mnist", data_dir=args.data_dir)
    if family == "vae":
        report = dgm.evaluate(
            model, dataset, split="val", iw_samples=100, mc_samples=0, samples=0, limit=args.images, minutes=None
        )
        estimate = report.likelihood["importance_weighted"]
        return {
            "value": -estimate["nats"],
            "standard_error": estimate["standard_error"],
            "what": f"validation NLL, nats (importance-weighted, k = 100, {args.images:,} digits)",
        }
    if family == "flow":
        report = dgm.evaluate(model, dataset, split="val", dequantization_draws=1, samples=0, minutes=None)
        estimate = report.likelihood["dequantized"]
        return {
            "value": estimate["bits_per_dim"],
            "standard_error": estimate["bits_per_dim_standard_error"],
            "what": "validation bits/dim (one dequantization draw a digit, 10,000 digits)",
        }
    sampler = {"steps": SAMPLE_STEPS} if family == "diffusion" else {}
    started = time.perf_counter()
    images = model.sample(args.samples, seed=0, **sampler)
    seconds = time.perf_counter() - started
    features = feature_network(dataset.describe(), torch.device("cpu"))
    measured = sample_quality(
        features.classifier,
        images,
        reference=dataset.val.images.float() / 255,
        held_out=dataset.train.images[-args.samples :].float() / 255,  # a floor from real training digits
    )
    return {
        "value": measured["model"]["fid"],
        "real_floor": measured["real_floor"]["fid"],
        "sampling_seconds": round(seconds, 1),
        "what": f"FID of {args.samples:,} samples against the validation digits",
    }


def one(args) -> None:
    """One configuration, inside its pinned process: train, then score; OUT/NAME/result.json."""
    overrides = GRIDS[args.family][args.one]
    folder = args.out / slug(args.one)
    command = [sys.executable, "-m", "dgm_cli", "train", args.family, "--minutes", str(args.minutes), "--seed", "0"]
    command += ["--data-dir", str(args.data_dir), "--out", str(folder / "run")]
    command += ["--checkpoint-dir", str(folder / "checkpoints")]  # the final copy stays beside the run
    command += ["--sample-epochs", "", *options(overrides)]
    process, started = launch(command, folder / "train.log", None, 1)
    wall = wait(process, started, args.one, folder / "train.log")
    records = [json.loads(line) for line in (folder / "run" / "metrics.jsonl").read_text().splitlines()]
    result = {
        "name": args.one,
        "options": overrides,
        "steps": records[-1]["step"],
        "budget_seconds_spent": records[-1]["elapsed"],
        "command_seconds": wall,
        "validation": score(args.family, folder / "run", args),
    }
    (folder / "result.json").write_text(json.dumps(result, indent=2) + "\n")


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def search(args) -> None:
    """Every configuration, two at a time on a core each; the record, best first."""
    # A configuration with a result in OUT is not trained again: a grid extended by a later round, or a search
    # interrupted, trains only what it lacks.
    waiting = [name for name in args.configs if not (args.out / slug(name) / "result.json").is_file()]
    running = {}  # core -> (name, process, started, log)
    while waiting or running:
        for core in (0, 1):
            if core not in running and waiting:
                name = waiting.pop(0)
                command = [sys.executable, __file__, args.family, "--one", name, "--minutes", str(args.minutes)]
                command += ["--data-dir", str(args.data_dir), "--out", str(args.out)]
                command += ["--samples", str(args.samples), "--images", str(args.images)]
                log = args.out / f"{slug(name)}.log"
                running[core] = (name, *launch(command, log, core, 1), log)
        for core, (name, process, started, log) in list(running.items()):
            if process.poll() is not None:
                wait(process, started, name, log)
                del running[core]
                print(f"done: {name}", flush=True)
        time.sleep(1)
    results = [json.loads((args.out / slug(name) / "result.json").read_text()) for name in args.configs]
    results.sort(key=lambda result: result["validation"]["value"])
    record = {
        "family": args.family,
        "minutes": args.minutes,
        "threads": 1,
        "command": "python " + shlex.join(sys.argv),  # quoted: a configuration's name holds spaces
        "chosen": results[0]["name"],
        "results": results,
    }
    args.record.parent.mkdir(parents=True, exist_ok=True)
    args.record.write_text(json.dumps(record, indent=2) + "\n")
    print("| configuration | steps | validation | |")
    print("| --- | --- | --- | --- |")
    for result in results:
        validation = result["validation"]
        value = f"{validation['value']:.4f}" if args.family == "flow" else f"{validation['value']:.2f}"
        print(f"| {result['name']} | {result['steps']:,} | {value} | {validation['what']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("family", choices=sorted(GRIDS))
    parser.add_argument("--minutes", type=float, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="The folder of the runs.")
    parser.add_argument("--record", type=Path, help="The JSON record to write (default OUT/search.json).")
    parser.add_argument("--samples", type=int, default=1000, help="diffusion, gan: samples scored (1,000).")
    parser.add_argument("--images", type=int, default=2000, help="vae: validation digits scored (2,000).")
    parser.add_argument(
        "--configs", help="Only these configurations of the grid, by name, separated by ';' (default: all of it)."
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)  # inside the pinned process of one configuration
    args = parser.parse_args()
    args.out = args.out.expanduser().resolve()
    if args.one is not None:
        one(args)
        return
    args.record = args.record or args.out / "search.json"
    args.configs = list(GRIDS[args.family]) if args.configs is None else args.configs.split(";")
    unknown = [name for name in args.configs if name not in GRIDS[args.family]]
    if unknown:
        parser.error(f"not in the {args.family} grid: {', '.join(unknown)} (it has: {'; '.join(GRIDS[args.family])})")
    search(args)


if __name__ == "__main__":
    main()
