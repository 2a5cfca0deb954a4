"""Milliseconds per VAE training step on the CPU, for the choices docs/performance.md discusses.

    python benchmarks/vae_step.py [--repeats 5] [--steps 100]
    python benchmarks/vae_step.py --profile

Variants run in interleaved blocks of `--steps` steps in one process (median
over `--repeats` blocks), so the machine's drift hits all alike: Adam's
default, foreach and fused kernels; dynamic binarization by torch.bernoulli
(the old way) or by comparing uniform uint8 draws (dgm's); bf16 autocast;
torch.compile of the step (its compilation is timed apart).

--profile instead looks inside dgm's step: where torch.profiler puts its time
over `--steps` steps, and the rate of each of its matrix products timed alone
(warm caches, median of 200), beside the 2048 x 2048 rate the arithmetic
floor of benchmarks/training_speed.py assumes.
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


def median_seconds(function, repeats: int = 200) -> float:
    for _ in range(20):
        function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def profile(images, steps: int) -> None:
    model, optimizer, step, bf16 = build(**VARIANTS["Adam fused, uint8 draws (dgm)"])
    block(images, model, optimizer, step, bf16, steps=20)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        block(images, model, optimizer, step, bf16, steps=steps)
    self_ms = {event.key: event.self_cpu_time_total / 1000 / steps for event in profiler.key_averages()}
    total = sum(self_ms.values())
    products = self_ms.get("aten::mm", 0) + self_ms.get("aten::addmm", 0)
    print(f"profiled step: {total:.2f} ms; matrix products (aten::mm, aten::addmm) {products:.2f} ms "
          f"({products / total:.0%}); fused Adam {self_ms.get('aten::_fused_adam_', 0):.2f} ms; "
          f"binarization draws (aten::random_) {self_ms.get('aten::random_', 0):.2f} ms")  # fmt: skip

    print("\n| product | shape | GFLOP/s alone |\n| --- | --- | --- |")
    batch = 128
    layers = [layer for layer in model.modules() if isinstance(layer, torch.nn.Linear)]
    for index, layer in enumerate(layers):
        n_in, n_out = layer.in_features, layer.out_features
        x, g, w = torch.randn(batch, n_in), torch.randn(batch, n_out), torch.randn(n_out, n_in)
        products = {"forward": (lambda: x @ w.t(), f"{batch}x{n_in} @ {n_in}x{n_out}"),
                    "weight gradient": (lambda: g.t() @ x, f"{n_out}x{batch} @ {batch}x{n_in}")}  # fmt: skip
        if index > 0:  # the first layer's input (the pixels) needs no gradient
            products["input gradient"] = (lambda: g @ w, f"{batch}x{n_out} @ {n_out}x{n_in}")
        for name, (function, shape) in products.items():
            rate = 2 * batch * n_in * n_out / median_seconds(function) / 1e9
            print(f"| layer {index + 1} {name} | {shape} | {rate:.0f} |")
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    print(f"| the floor's reference | 2048x2048 @ 2048x2048 | {2 * 2048**3 / median_seconds(lambda: a @ b, 20) / 1e9:.0f} |")


def main():
    flush_subnormals()  # first, as the dgm command does
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--profile", action="store_true", help="Look inside dgm's step instead of racing variants.")
    args = parser.parse_args()
    torch.manual_seed(0)
    images = torch.randint(0, 256, (args.steps * 128, 28, 28), dtype=torch.uint8)
    if args.profile:
        profile(images, args.steps)
        return
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
