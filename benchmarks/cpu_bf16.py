"""Milliseconds per training step on the CPU: fp32, bf16 matrix products (dgm's --precision bf16) and bf16 autocast.

    python benchmarks/cpu_bf16.py [--models vae,gan] [--repeats 5] [--steps 100]

For each model, three copies with the same initial weights train on the same
random batches in interleaved blocks of `--steps` steps (median over
`--repeats` blocks), the way dgm's trainer runs a step:
  fp32           plain float32;
  bf16 matmuls   speed.step_precision("bf16"): float32 matmul precision "medium", so oneDNN
                 rounds matrix-product operands to bf16 and accumulates in fp32 (dgm's
                 --precision bf16 on the CPU);
  bf16 autocast  torch.autocast(bfloat16) around the forward pass (activations in bf16 too).
It also prints how far each variant's mean loss over the last block (the GAN's
discriminator loss) lies from fp32's.
"""

import argparse
import copy
import statistics
import time

import torch

from dgm_cli.device import describe_device
from dgm_cli.registry import create_model
from dgm_cli.speed import flush_subnormals, step_precision

CPU = torch.device("cpu")


def step(model, optimizer, batch, variant):
    with step_precision("bf16" if variant == "bf16 matmuls" else "fp32", CPU):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant == "bf16 autocast"):
            metrics = model.training_step(batch)
        if optimizer is not None:  # the GAN steps its own optimizers
            optimizer.zero_grad(set_to_none=True)
            metrics["loss"].backward()
            optimizer.step()
    return metrics


def block(images, batch_size, model, optimizer, variant, steps):
    losses, started = [], time.perf_counter()
    for index in range(steps):
        metrics = step(model, optimizer, images[index * batch_size : (index + 1) * batch_size], variant)
        losses.append(metrics["loss" if "loss" in metrics else "d_loss"])
    seconds = time.perf_counter() - started
    return seconds / steps * 1000, torch.stack(losses).float().mean().item()


def main():
    flush_subnormals()  # first, as the dgm command does
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="vae,gan")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    variants = ("fp32", "bf16 matmuls", "bf16 autocast")
    print(
        f"{describe_device(CPU)}, torch {torch.__version__}, median of {args.repeats} blocks "
        f"of {args.steps} steps at each model's default batch size"
    )
    print("| model | variant | ms per step | speed-up | loss of the last block, relative to fp32 |")
    print("| --- | --- | --- | --- | --- |")
    for name in args.models.split(","):
        torch.manual_seed(0)
        original = create_model(name)
        batch_size = original.config.batch_size
        images = torch.randint(0, 256, (args.steps * batch_size, 28, 28), dtype=torch.uint8)
        built = {}
        for variant in variants:
            model = copy.deepcopy(original)
            optimizers = model.configure_optimizers()
            built[variant] = (model, None if model.manual_optimization else optimizers[0])
        for variant, (model, optimizer) in built.items():  # warm-up
            block(images, batch_size, model, optimizer, variant, steps=20)
        times, losses = {v: [] for v in variants}, {}
        for _ in range(args.repeats):
            for variant, (model, optimizer) in built.items():
                torch.manual_seed(1)  # the same noise draws for every variant in this block
                milliseconds, losses[variant] = block(images, batch_size, model, optimizer, variant, args.steps)
                times[variant].append(milliseconds)
        fp32 = statistics.median(times["fp32"])
        for variant in variants:
            median = statistics.median(times[variant])
            gap = (losses[variant] - losses["fp32"]) / abs(losses["fp32"])
            print(f"| {name} | {variant} | {median:.2f} | {fp32 / median:.2f}x | {gap:+.1e} |")


if __name__ == "__main__":
    main()
