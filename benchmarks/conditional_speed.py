"""Training speed of conditional models against the same models unconditional, side by side in one process.

    python benchmarks/conditional_speed.py [--models vae,gan,flow,flow-prior,flow-ms,flow-ms-prior]
        [--rounds 7] [--steps 20]
        [--data-dir ../shared/data/mnist] [--json results.json]

For each model it builds the default configuration twice, with and without --conditional, and times
optimizer steps on the same batches of real images and their labels (each model's default batch size):
`--rounds` rounds, each timing `--steps` steps of one kind and then of the other (the order alternating
between rounds, so drift in the machine's speed hits both alike). It reports the median seconds per
step of each and their ratio (conditional / unconditional). The step is the trainer's: training_step,
then for a model that does not step its own optimizers, backward and one Adam step.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dgm_cli.data import load_dataset  # noqa: E402
from dgm_cli.device import describe_device  # noqa: E402
from dgm_cli.registry import create_model  # noqa: E402

# The flows twice: conditioned in their couplings too (the default) and by the class prior alone.
MODELS = {
    "vae": ("vae", {}),
    "gan": ("gan", {}),
    "flow": ("flow", {}),
    "flow-prior": ("flow", {"conditioning": "prior"}),
    "flow-ms": ("flow", {"arch": "realnvp-ms"}),
    "flow-ms-prior": ("flow", {"arch": "realnvp-ms", "conditioning": "prior"}),
}


def stepper(model):
    optimizers = model.configure_optimizers()

    def step(batch, labels):
        metrics = model.training_step(batch, labels)
        if not model.manual_optimization:
            optimizers[0].zero_grad(set_to_none=True)
            metrics["loss"].backward()
            optimizers[0].step()

    return step


def time_steps(step, batches, steps: int) -> float:
    start = time.perf_counter()
    for index in range(steps):
        step(*batches[index % len(batches)])
    return (time.perf_counter() - start) / steps


def measure(name: str, dataset, rounds: int, steps: int) -> dict:
    model_name, overrides = MODELS[name]
    torch.manual_seed(0)
    kinds = {
        kind: create_model(model_name, **overrides, conditional=kind == "conditional").train()
        for kind in ("unconditional", "conditional")
    }
    size = kinds["unconditional"].config.batch_size
    images, labels = dataset.train.images, dataset.train.labels
    batches = [(images[i : i + size], labels[i : i + size]) for i in range(0, size * 8, size)]
    steps_of = {kind: stepper(model) for kind, model in kinds.items()}
    for step in steps_of.values():  # warm-up: first-call allocations, Adam's state
        time_steps(step, batches, 2)
    times = {kind: [] for kind in kinds}
    for round_index in range(rounds):
        order = list(kinds) if round_index % 2 == 0 else list(reversed(kinds))
        for kind in order:
            times[kind].append(time_steps(steps_of[kind], batches, steps))
    medians = {kind: statistics.median(values) for kind, values in times.items()}
    return {
        "model": name,
        "batch_size": size,
        "steps_per_round": steps,
        "rounds": rounds,
        "seconds_per_step": medians,
        "ratio": medians["conditional"] / medians["unconditional"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    dataset = load_dataset("mnist" if args.data_dir else "mnist-mini", args.data_dir)
    results = {"device": describe_device(torch.device("cpu")), "dataset": dataset.name, "models": []}
    print(f"{results['device']}, {dataset.name}")
    for name in args.models.split(","):
        result = measure(name, dataset, args.rounds, args.steps)
        results["models"].append(result)
        seconds = result["seconds_per_step"]
        print(
            f"{name:8s} batch {result['batch_size']:4d}  unconditional {seconds['unconditional'] * 1e3:8.2f} ms/step  "
            f"conditional {seconds['conditional'] * 1e3:8.2f} ms/step  ratio {result['ratio']:.3f}",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
