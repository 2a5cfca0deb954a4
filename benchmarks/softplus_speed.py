"""Nanoseconds per element of the softplus in the VAE's pixel log-likelihood: PyTorch's kernels against dgm's.

    python benchmarks/softplus_speed.py [--repeats 200]
    ATEN_CPU_CAPABILITY=avx2 python benchmarks/softplus_speed.py    # PyTorch's AVX2 kernels instead

Times, in this process and one thread, on a (20, 784) block (a batch of the
IWAE paper's protocol) and a (1000, 784) block (a chunk of importance-weighted
draws): exp, log and log1p as the yardstick; F.softplus, F.logsigmoid and
F.binary_cross_entropy_with_logits; dgm's softplus (max(l, 0) + log(1 +
e^-|l|), gradient sigmoid(l)), which the k-draw bounds and `dgm eval` use;
softplus(l).sum(-1) forward and backward, as a k-draw training bound takes it.
The median of --repeats calls after a warm-up. ATEN_CPU_CAPABILITY chooses which of
PyTorch's compiled kernel sets (default, avx2, avx512) its elementwise
operations use; matrix products are not affected.
"""

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from vae_step import median_seconds  # noqa: E402

from dgm_cli.models.vae import softplus  # noqa: E402


def forward_and_backward(function, logits):
    leaf = logits.clone().requires_grad_()

    def run():
        leaf.grad = None
        function(leaf).sum(-1).sum().backward()

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, kernels {torch.backends.cpu.get_cpu_capability()}, 1 thread; "
        f"ns per element (median of {args.repeats} calls; of {max(10, args.repeats // 10)} on the large block)\n"
    )
    print("| operation | (20, 784) | (1000, 784) |\n| --- | --- | --- |")
    blocks = [torch.randn(rows, 784) * 4 for rows in (20, 1000)]
    pixels = [torch.bernoulli(torch.sigmoid(logits)) for logits in blocks]
    rows = {
        "torch.exp": lambda logits, x: lambda: torch.exp(logits),
        "torch.log": lambda logits, x: lambda: torch.log(logits.abs()),
        "torch.log1p": lambda logits, x: lambda: torch.log1p(logits.abs()),
        "F.softplus": lambda logits, x: lambda: F.softplus(logits),
        "F.logsigmoid": lambda logits, x: lambda: F.logsigmoid(logits),
        "F.binary_cross_entropy_with_logits": lambda logits, x: (
            lambda: F.binary_cross_entropy_with_logits(logits, x, reduction="none")
        ),
        "dgm softplus": lambda logits, x: lambda: softplus(logits),
        "F.softplus, summed, forward + backward": lambda logits, x: forward_and_backward(F.softplus, logits),
        "dgm softplus, summed, forward + backward": lambda logits, x: forward_and_backward(softplus, logits),
    }
    for name, make in rows.items():
        cells = []
        for logits, x in zip(blocks, pixels):
            repeats = args.repeats if len(logits) <= 20 else max(10, args.repeats // 10)
            cells.append(f"{median_seconds(make(logits, x), repeats) / logits.numel() * 1e9:.2f}")
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
