"""Speed of the VAE's importance-weighted estimator against its arithmetic floor, and against the textbook pass.

    python benchmarks/estimator_speed.py --checkpoint CKPT --data-dir ../shared/data/mnist [--images 500]
        [--k 5000] [--repeats 3] [--chunk-elements 8000000,1000000]

Times `dgm_cli.estimators.evaluate_images` (the `dgm eval` importance-weighted
estimate, no prior Monte-Carlo) on the first N test digits with k posterior
draws each, in two versions of the decoder's log-likelihood, alternating, in
this process: "dgm" (VAE.reconstruction: the x . logits sum through the last
layer's weights, one softplus pass over the logits) and "textbook" (a
cross-entropy of the logits against x expanded to the k draws). For each it
prints images/s, the projected time of the full 10,000-image test split, the
estimate (nats, with its standard error), and, for chunk sizes given, the
same for `CHUNK_ELEMENTS` draws x pixels per chunk.

The floor: the matrix-multiply FLOPs of one image's k draws (torch's
FlopCounterMode over the estimator itself) at the machine's measured float32
matmul rate, plus the softplus over k x 784 logits, which no arithmetic
shortcut removes, at the measured rate of dgm's softplus(...).sum(-1) on a
cache-sized block (F.softplus before that function replaced it: see
benchmarks/softplus_speed.py).
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def textbook_reconstruction(model):
    """The cross-entropy against an expanded x, as the estimator computed it before (and as tutorials do)."""

    def reconstruction(z, x, projected_x=None, labels=None):
        logits, targets = model.decoder_logits(z, labels), x[:, None].expand(-1, z.shape[1], -1)
        return -torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(-1)

    return reconstruction


def softplus_rate(repeats: int = 20) -> float:
    """Elements per second of dgm's softplus(l).sum(-1) (the estimator's) on a block of logits that stays in cache."""
    from dgm_cli.models.vae import softplus

    logits = torch.randn(1000, 784)
    for _ in range(3):
        softplus(logits).sum(-1)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        softplus(logits).sum(-1)
        times.append(time.perf_counter() - started)
    return logits.numel() / statistics.median(times)


def matmul_flops_per_image(model, images, k: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    from dgm_cli.estimators import evaluate_images

    with FlopCounterMode(display=False) as counter:
        evaluate_images(model, images[:1], seed=0, iw_samples=k, mc_samples=0)
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="vae", help="a checkpoint, run folder or pretrained name")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-elements", default="", help="Comma-separated CHUNK_ELEMENTS values to compare.")
    args = parser.parse_args()

    from training_speed import matmul_rate

    from dgm_cli import evaluate
    from dgm_cli.checkpoint import load_checkpoint
    from dgm_cli.data import load_dataset
    from dgm_cli.device import describe_device
    from dgm_cli.loading import resolve
    from dgm_cli.speed import flush_subnormals

    flush_subnormals()
    model, info = load_checkpoint(resolve(args.checkpoint))
    images = load_dataset("mnist", Path(args.data_dir)).test.images[: args.images]
    ours = model.reconstruction
    variants = {"dgm": ours, "textbook": textbook_reconstruction(model)}
    chunks = [int(value) for value in args.chunk_elements.split(",") if value] or [evaluate.CHUNK_ELEMENTS]
    default_chunk = evaluate.CHUNK_ELEMENTS
    rate, softplus = matmul_rate("cpu"), softplus_rate()
    flops = matmul_flops_per_image(model, images, args.k)
    floor = flops / rate + args.k * 784 / softplus  # seconds per image
    print(
        f"{describe_device(torch.device('cpu'))}, torch {torch.__version__}; {info.path} ({info.config.preset}); "
        f"{args.images} test images, k={args.k}; matmul {rate / 1e9:.0f} GFLOP/s, softplus {softplus / 1e9:.2f} G/s"
    )
    print(
        f"floor: {flops / 1e6:.0f} MFLOP of matrix products per image ({flops / rate * 1e3:.2f} ms) + "
        f"{args.k * 784 / 1e6:.1f}M softplus ({args.k * 784 / softplus * 1e3:.2f} ms) = {floor * 1e3:.2f} ms per image, "
        f"{floor * 10_000 / 60:.1f} min for the 10,000 test digits"
    )
    results = {}
    for repeat in range(args.repeats):
        order = list(variants) if repeat % 2 == 0 else list(reversed(variants))
        for name in order:
            for chunk in chunks if name == "dgm" else [default_chunk]:
                model.reconstruction = variants[name]
                evaluate.CHUNK_ELEMENTS = chunk
                started = time.perf_counter()
                estimate = evaluate.evaluate_images(model, images, seed=0, iw_samples=args.k, mc_samples=0)
                seconds = time.perf_counter() - started
                results.setdefault((name, chunk), []).append((seconds, estimate["importance_weighted"].summary()))
    model.reconstruction, evaluate.CHUNK_ELEMENTS = ours, default_chunk
    print("| pass | chunk elements | images/s | 10,000 images | / floor | estimate (nats) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (name, chunk), runs in results.items():
        seconds = statistics.median(run[0] for run in runs)
        summary = runs[0][1]
        print(
            f"| {name} | {chunk:,} | {args.images / seconds:.1f} | {seconds / args.images * 10_000 / 60:.1f} min | "
            f"{seconds / args.images / floor:.2f}x | {summary['nats']:.3f} ± {summary['standard_error']:.3f} |"
        )


if __name__ == "__main__":
    main()
