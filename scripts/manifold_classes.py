"""What the classifier reads in each cell of a zdim-2 VAE's manifold figure.

    python scripts/manifold_classes.py [CHECKPOINT] [--grid 20] [--edge 0.05]    # default: the pretrained vae-zdim2

Draws the same grid `dgm manifold` draws (the decoder's Bernoulli means at the
prior quantiles edge..1-edge), classifies every cell with the shipped MNIST
classifier and prints how many cells it labels as each digit, and for every
digit the highest probability any cell gets for it.
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dgm_cli.loading import load  # noqa: E402
from dgm_cli.metrics import load_classifier  # noqa: E402
from dgm_cli.sampling import manifold_images  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "checkpoint", nargs="?", default="vae-zdim2", help="a checkpoint, run folder or pretrained name"
    )
    parser.add_argument("--grid", type=int, default=20)
    parser.add_argument("--edge", type=float, default=0.05)
    args = parser.parse_args()
    model = load(args.checkpoint, model="vae", device="cpu")
    with torch.no_grad():
        cells = manifold_images(model, args.grid, edge=args.edge)
        probabilities = torch.softmax(load_classifier()(cells), dim=1)
    labels = probabilities.argmax(1)
    print(f"{args.checkpoint}: {args.grid}x{args.grid} = {len(cells)} cells, edge {args.edge}")
    for digit in range(10):
        print(
            f"digit {digit}: {int((labels == digit).sum()):4d} cells, highest probability {probabilities[:, digit].max():.2f}"
        )


if __name__ == "__main__":
    main()
