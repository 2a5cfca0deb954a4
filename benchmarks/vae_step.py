"""Milliseconds per VAE training step on the CPU, for the choices docs/performance.md discusses.

    python benchmarks/vae_step.py [--repeats 5] [--steps 100]

Variants run in interleaved blocks of `--steps` steps in one process (median
over `--repeats` blocks), so the machine's drift hits all alike: Adam's
default, foreach and fused kernels; dynamic binarization by torch.bernoulli
(the old way) or by comparing uniform uint8 draws (dgm's); bf16 autocast;
torch.compile of the step (its compilation is timed apart).
"""

import argparse
import statistics
import time

import torch

from dgm_cli.registry import create_model
from dgm_cli.speed import flush_subnormals


def bernoulli_pixels(batch):
    return torch.bernoulli(batch.flatten(1).float() / 255)


VARIANTS = {
    "Adam default, bernoulli": {"adam": {}, "pixels": bernoulli_pixels},
    "Adam foreach, bernoulli": {"adam": {"foreach": True}, "pixels": bernoulli_pixels},
    "Adam fused, bernoulli": {"adam": {"fused": True}, "pixels": bernoulli_pixels},
    "Adam fused, uint8 draws (dgm)": {"adam": {"fused": True}},
    "dgm + bf16 autocast": {"adam": {"fused": True}, "bf16": True},
    "dgm + torch.compile": {"adam": {"fused": True}, "compile": True},
}


def build(adam, pixels=None, bf16=False, compile=False):
    model = create_model("vae")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, **adam)
    if pixels is not None:
        model.binary_pixels = pixels
    step = torch.compile(model.training_step) if compile else model.training_step
    return model, optimizer, step, bf16


def block(images, model, optimizer, step, bf16, steps):
    started = time.perf_counter()
    for index in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            metrics = step(images[index * 128 : (index + 1) * 128])
        optimizer.zero_grad(set_to_none=True)
        metrics["loss"].backward()
        optimizer.step()
    return (time.perf_counter() - started) / steps * 1000


def main():
    flush_subnormals()  # first, as the dgm command does
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    torch.manual_seed(0)
    images = torch.randint(0, 256, (args.steps * 128, 28, 28), dtype=torch.uint8)
    built = {name: build(**variant) for name, variant in VARIANTS.items()}
    for name, parts in built.items():  # warm-up (and compilation)
        started = time.perf_counter()
        block(images, *parts, steps=20)
        print(f"warm-up {name}: {time.perf_counter() - started:.1f} s")
    times = {name: [] for name in built}
    for _ in range(args.repeats):
        for name, parts in built.items():
            times[name].append(block(images, *parts, steps=args.steps))
    print(f"\nCPU, {torch.get_num_threads()} threads, torch {torch.__version__}, batch 128, median of {args.repeats} blocks")
    print("| variant | ms per step |\n| --- | --- |")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.2f} |")


if __name__ == "__main__":
    main()
