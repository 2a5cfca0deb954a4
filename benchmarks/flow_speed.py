"""What each flow costs per epoch: parameters, training FLOPs per image, seconds per step and per epoch.

    python benchmarks/flow_speed.py [--configs seed,ms,tutorial-checkerboard,...] [--repeats 5]
        [--batch-size 128] [--threads N] [--json results.json]
    python benchmarks/flow_speed.py --profile tutorial-multiscale [--repeats 5] [--threads N]

A configuration named NAME-contiguous is NAME with its convolutions' weights in
the contiguous (NCHW) memory format instead of dgm's channels-last, as they were
before (for a race of the two). Every configuration is built once from the same
seed and trained on the same random batch of 8-bit images; steps (forward,
backward, Adam) of the configurations alternate, one of each per round, so
drift in the machine's speed hits all alike, and the median over `--repeats` rounds (after one
warm-up step each) is reported. Seconds per epoch are that median times the
steps of a 50,000-image epoch: the training alone, without the validation
pass and the figures of a real epoch. FLOPs are counted by torch's
FlopCounterMode over one step (convolutions and matrix products; the
element-wise work of the gated networks is not in them).

--profile CONFIG looks inside one configuration's step instead: torch.profiler's
operators by their own time, and the step against its arithmetic floor (its
FLOPs at the rate of a 2048x2048 matrix product measured in the same run, the
floor benchmarks/training_speed.py and vae_step.py use).
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dgm_cli.registry import create_model  # noqa: E402
from dgm_cli.speed import flush_subnormals  # noqa: E402

TRAIN_IMAGES = 50_000
CONFIGS = {
    "seed": {},  # realnvp-mlp, the seed's flow
    "ms": {"arch": "realnvp-ms"},  # dgm's multi-scale flow before the presets (the shipped checkpoint's configuration)
    "tutorial-checkerboard": {"preset": "tutorial-checkerboard"},
    "tutorial-vardeq": {"preset": "tutorial-vardeq"},
    "tutorial-multiscale": {"preset": "tutorial-multiscale"},
}


def contiguous(model):
    return model.to(memory_format=torch.contiguous_format)


# Configurations with a changed implementation: name -> (the configuration, the change to its built model).
VARIANTS = {f"{name}-contiguous": (name, contiguous) for name in CONFIGS}


def training_step(model, optimizer, batch) -> float:
    optimizer.zero_grad()
    loss = model.training_step(batch)["loss"]
    loss.backward()
    optimizer.step()
    return loss.item()


def flops_per_image(model, batch) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model.training_step(batch)["loss"].backward()
    model.zero_grad()
    return counter.get_total_flops() / len(batch)


def reference_rate() -> float:
    """FLOP/s of a 2048x2048 matrix product on this machine and thread count (median of 10 after 3)."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    times = []
    for repeat in range(13):
        started = time.perf_counter()
        a @ b
        if repeat >= 3:
            times.append(time.perf_counter() - started)
    return 2 * 2048**3 / statistics.median(times)


def profile(name: str, model, optimizer, batch, flops: float, repeats: int) -> None:
    """The step's operators by their own time (per step, largest first), and the step against its floor."""
    seconds = []
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        for _ in range(repeats):
            started = time.perf_counter()
            training_step(model, optimizer, batch)
            seconds.append(time.perf_counter() - started)
    self_ms = {event.key: event.self_cpu_time_total / 1000 / repeats for event in profiler.key_averages()}
    total = sum(self_ms.values())
    print(f"{name}: profiled step {total:.0f} ms (operators' own time)\n")
    print("| operator | ms a step | share |\n| --- | --- | --- |")
    for key, ms in sorted(self_ms.items(), key=lambda item: -item[1])[:15]:
        print(f"| {key} | {ms:.1f} | {ms / total:.1%} |")
    step, rate = statistics.median(seconds), reference_rate()
    floor = flops * len(batch) / rate
    print(
        f"\nstep {step:.3f} s (median of {repeats}, under the profiler); {flops * len(batch) / 1e9:.0f} GFLOP a step "
        f"at {rate / 1e9:.0f} GFLOP/s (2048x2048 product) = floor {floor:.3f} s, {floor / step:.0%} of the step"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", type=Path)
    parser.add_argument("--profile", metavar="CONFIG", help="Profile one configuration's step instead.")
    args = parser.parse_args()
    flush_subnormals()  # first, as the dgm command does
    torch.set_num_threads(args.threads)
    names = [args.profile] if args.profile else args.configs.split(",")
    unknown = sorted(set(names) - set(CONFIGS) - set(VARIANTS))
    if unknown:
        known = ", ".join([*CONFIGS, *VARIANTS])
        parser.error(f"unknown configuration(s) {', '.join(unknown)}; choose from {known}")

    batch = torch.randint(
        0, 256, (args.batch_size, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    runs = {}
    for name in names:
        torch.manual_seed(0)
        base, change = VARIANTS.get(name, (name, None))
        model = create_model("flow", **CONFIGS[base]).train()
        if change is not None:
            model = change(model)
        optimizer = model.configure_optimizers()[0]
        training_step(model, optimizer, batch)  # warm-up; also initialises actnorm from the batch
        runs[name] = (model, optimizer, flops_per_image(model, batch))
    if args.profile:
        model, optimizer, flops = runs[args.profile]
        profile(args.profile, model, optimizer, batch, flops, args.repeats)
        return
    seconds = {name: [] for name in names}
    for _ in range(args.repeats):
        for name, (model, optimizer, _) in runs.items():
            start = time.perf_counter()
            training_step(model, optimizer, batch)
            seconds[name].append(time.perf_counter() - start)

    steps_per_epoch = -(-TRAIN_IMAGES // args.batch_size)
    rows = []
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch_size}, median of {args.repeats}")
    print(f"{'configuration':<24}{'parameters':>12}{'GFLOP/image':>13}{'s/step':>9}{'min/epoch':>11}{'images/s':>10}")
    for name, (model, _, flops) in runs.items():
        step = statistics.median(seconds[name])
        row = {
            "configuration": name,
            "options": CONFIGS[VARIANTS.get(name, (name,))[0]],
            "parameters": sum(p.numel() for p in model.parameters()),
            "training_gflop_per_image": flops / 1e9,
            "seconds_per_step": step,
            "minutes_per_epoch": step * steps_per_epoch / 60,
            "images_per_second": args.batch_size / step,
        }
        rows.append(row)
        print(
            f"{name:<24}{row['parameters']:>12,}{row['training_gflop_per_image']:>13.2f}{step:>9.2f}"
            f"{row['minutes_per_epoch']:>11.1f}{row['images_per_second']:>10.0f}"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"threads": args.threads, "batch_size": args.batch_size, "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
