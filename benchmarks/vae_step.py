"""Milliseconds per VAE training step on the CPU, for the choices docs/performance.md discusses.

    python benchmarks/vae_step.py [--repeats 5] [--steps 100] [--preset NAME] [--batch-size 128] [--hidden N]
        [--variants WORDS]
    python benchmarks/vae_step.py --profile

Variants run in interleaved blocks of `--steps` steps in one process (median
over `--repeats` blocks, every other round in reverse order), from the same
initial weights, so the machine's drift hits all alike: Adam's
default, foreach and fused kernels; dynamic binarization by torch.bernoulli
(the old way) or by comparing uniform uint8 draws (dgm's); the softplus of
the k-draw bounds (`--objective iwae`, e.g. `--preset iwae-1l-k5`) by
F.softplus (the old way) or by dgm's (benchmarks/softplus_speed.py); bf16
autocast; torch.compile of the step (its compilation is timed apart); the
moving average of the weights (`--ema`) updated after each step.
--preset and --batch-size choose the network and batch (the seed's VAE and
128 by default; the IWAE paper's row 1 is `--preset iwae-1l-vae
--batch-size 20`).

--profile instead looks inside dgm's step: where torch.profiler puts its time
over `--steps` steps, and the rate of each of its matrix products timed alone
(warm caches, median of 200), beside the 2048 x 2048 rate the arithmetic
floor of benchmarks/training_speed.py assumes.
"""

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from dgm_cli.models import vae as vae_module
from dgm_cli.registry import create_model, get_spec
from dgm_cli.speed import flush_subnormals


def bernoulli_pixels(batch):
    return torch.bernoulli(batch.flatten(1).float() / 255)


SLOW = {"softplus": torch.nn.functional.softplus}  # PyTorch's, as before benchmarks/softplus_speed.py

VARIANTS = {
    "Adam default, bernoulli": {"adam": {}, "pixels": bernoulli_pixels, **SLOW},
    "Adam foreach, bernoulli": {"adam": {"foreach": True}, "pixels": bernoulli_pixels, **SLOW},
    "Adam fused, bernoulli": {"adam": {"fused": True}, "pixels": bernoulli_pixels, **SLOW},
    "Adam fused, uint8 draws, F.softplus": {"adam": {"fused": True}, **SLOW},
    "Adam fused, uint8 draws, dgm softplus (dgm)": {"adam": {"fused": True}},
    "dgm + bf16 autocast": {"adam": {"fused": True}, "bf16": True},
    "dgm + torch.compile": {"adam": {"fused": True}, "compile": True},
    "dgm + --ema 0.9995": {"adam": {"fused": True}, "ema": 0.9995},
}
DGM = "Adam fused, uint8 draws, dgm softplus (dgm)"


@dataclass
class Variant:
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    step: Callable
    bf16: bool
    softplus: Callable  # the module-level softplus the model's k-draw bounds call during this variant's blocks
    after_step: Callable  # what the trainer calls after each optimizer step (the moving average's update)


def build(settings, adam, pixels=None, softplus=None, bf16=False, compile=False, ema=0.0) -> Variant:
    model = create_model("vae", **settings, ema=ema)
    optimizer = torch.optim.Adam(model.live_networks().parameters(), lr=1e-3, **adam)
    if pixels is not None:
        model.binary_pixels = pixels
    step = torch.compile(model.training_step) if compile else model.training_step
    return Variant(
        model, optimizer, step, bf16, softplus or vae_module.softplus, lambda: model.optimizer_stepped(optimizer)
    )


def block(images, variant: Variant, steps: int, batch: int) -> float:
    kept, vae_module.softplus = vae_module.softplus, variant.softplus
    try:
        started = time.perf_counter()
        for index in range(steps):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant.bf16):
                metrics = variant.step(images[index * batch : (index + 1) * batch])
            variant.optimizer.zero_grad(set_to_none=True)
            metrics["loss"].backward()
            variant.optimizer.step()
            variant.after_step()
        return (time.perf_counter() - started) / steps * 1000
    finally:
        vae_module.softplus = kept


def median_seconds(function, repeats: int = 200) -> float:
    for _ in range(20):
        function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def profile(images, steps: int, settings: dict, batch: int) -> None:
    variant = build(settings, **VARIANTS[DGM])
    block(images, variant, 20, batch)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        block(images, variant, steps, batch)
    self_ms = {event.key: event.self_cpu_time_total / 1000 / steps for event in profiler.key_averages()}
    total = sum(self_ms.values())
    products = self_ms.get("aten::mm", 0) + self_ms.get("aten::addmm", 0)
    print(
        f"profiled step: {total:.2f} ms; matrix products (aten::mm, aten::addmm) {products:.2f} ms "
        f"({products / total:.0%}); fused Adam {self_ms.get('aten::_fused_adam_', 0):.2f} ms; "
        f"binarization draws (aten::random_) {self_ms.get('aten::random_', 0):.2f} ms"
    )

    print("\n| product | shape | GFLOP/s alone |\n| --- | --- | --- |")
    layers = [layer for layer in variant.model.modules() if isinstance(layer, torch.nn.Linear)]
    floor = 0.0  # the step's matrix products, each timed alone: what no loop around them can go below
    for index, layer in enumerate(layers):
        n_in, n_out = layer.in_features, layer.out_features
        x, g, w = torch.randn(batch, n_in), torch.randn(batch, n_out), torch.randn(n_out, n_in)
        products = {
            "forward": (lambda x=x, w=w: x @ w.t(), f"{batch}x{n_in} @ {n_in}x{n_out}"),
            "weight gradient": (lambda g=g, x=x: g.t() @ x, f"{n_out}x{batch} @ {batch}x{n_in}"),
        }
        if index > 0:  # the first layer's input (the pixels) needs no gradient
            products["input gradient"] = (lambda g=g, w=w: g @ w, f"{batch}x{n_out} @ {n_out}x{n_in}")
        for name, (function, shape) in products.items():
            seconds = median_seconds(function)
            floor += seconds
            print(f"| layer {index + 1} {name} | {shape} | {2 * batch * n_in * n_out / seconds / 1e9:.0f} |")
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    print(
        f"| the floor's reference | 2048x2048 @ 2048x2048 | {2 * 2048**3 / median_seconds(lambda: a @ b, 20) / 1e9:.0f} |"
    )
    print(f"\nthe step's matrix products, each timed alone: {floor * 1000:.2f} ms a step")


def main():
    flush_subnormals()  # first, as the dgm command does
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument(
        "--preset", default="", help="A VAE preset's network (dgm models lists them); the seed's by default."
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--hidden", type=int, help="Hidden units (pytorch/examples' VAE: 400; dgm's: 500).")
    parser.add_argument(
        "--variants",
        default="",
        help="Race only the variants whose names contain one of these "
        "comma-separated words (fewer variants, more rounds in the same time).",
    )
    parser.add_argument("--profile", action="store_true", help="Look inside dgm's step instead of racing variants.")
    args = parser.parse_args()
    words = [word for word in args.variants.split(",") if word]
    chosen = {name: variant for name, variant in VARIANTS.items() if not words or any(word in name for word in words)}
    settings = {}
    if args.preset:  # the preset's network, whatever batch and schedule it trains with
        overrides = get_spec("vae").presets[args.preset].overrides
        settings = {
            key: value for key, value in overrides.items() if key not in ("batch_size", "epochs", "sample_epochs")
        }
    if args.hidden:
        settings["hidden"] = args.hidden
    torch.manual_seed(0)
    batch = args.batch_size
    images = torch.randint(0, 256, (args.steps * batch, 28, 28), dtype=torch.uint8)
    if args.profile:
        profile(images, args.steps, settings, batch)
        return
    built = {}
    for name, variant in chosen.items():
        torch.manual_seed(0)  # the same initial weights in every variant
        built[name] = build(settings, **variant)
    for name, variant in built.items():  # warm-up (and compilation)
        started = time.perf_counter()
        block(images, variant, 20, batch)
        print(f"warm-up {name}: {time.perf_counter() - started:.1f} s")
    times = {name: [] for name in built}
    for repeat in range(args.repeats):  # every other round in reverse order, so no variant always follows the same one
        for name in list(built) if repeat % 2 == 0 else list(reversed(built)):
            times[name].append(block(images, built[name], args.steps, batch))
    network = args.preset or "the seed's VAE"
    print(
        f"\nCPU, {torch.get_num_threads()} threads, torch {torch.__version__}, {network}, batch {batch}, "
        f"median of {args.repeats} blocks"
    )
    print("| variant | ms per step |\n| --- | --- |")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.2f} |")


if __name__ == "__main__":
    main()
