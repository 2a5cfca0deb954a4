"""How noisy is each log-likelihood estimator? Repeat it with fresh draws and look at the spread per image.

    python benchmarks/estimator_noise.py CHECKPOINT --data-dir ../shared/data/mnist [--images 500 --repeats 5 --k 1000]

The images (the first N of the test split) and their binarization stay fixed;
only the Monte-Carlo draws change between repeats. Prints a Markdown table of
the mean estimate and the per-image standard deviation across repeats
(median and 90th percentile over images), in nats.
"""

import argparse
from pathlib import Path

import torch

from dgm_cli.checkpoint import load_checkpoint
from dgm_cli.data import load_dataset
from dgm_cli.estimators import latent_log_likelihood

parser = argparse.ArgumentParser()
parser.add_argument("checkpoint", type=Path)
parser.add_argument("--data-dir", type=Path)
parser.add_argument("--images", type=int, default=500)
parser.add_argument("--repeats", type=int, default=5)
parser.add_argument("--k", type=int, default=1000)
args = parser.parse_args()

model, info = load_checkpoint(args.checkpoint)
images = load_dataset(info.data["name"], args.data_dir).test.images[: args.images]
prepared = model.prepare_split(images, train=False, generator=torch.Generator().manual_seed(0))
runs = []
for repeat in range(args.repeats):
    torch.manual_seed(1000 + repeat)
    estimates = latent_log_likelihood(model, prepared, iw_samples=args.k, mc_samples=args.k)
    runs.append({name: estimate.per_image for name, estimate in estimates.items()})

print(f"{info.path}: {args.images} test images of {info.data['name']}, {args.repeats} repeats, k = {args.k}\n")
print("| estimator | mean log p(x) [nats] | per-image std across repeats: median | 90th percentile |")
print("| --- | --- | --- | --- |")
for name in runs[0]:
    values = torch.stack([run[name] for run in runs])  # (repeats, images)
    spread = values.std(dim=0)
    print(f"| {name} | {values.mean().item():.2f} | {spread.median().item():.3f} | {spread.quantile(0.9).item():.3f} |")
