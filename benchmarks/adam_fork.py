"""Does Adam's beta1 (or epsilon) matter late in a VAE run? Fork one saved training state into arms that differ
only in those settings, train each arm on, and compare the arms on the same test images and draws.

    python benchmarks/adam_fork.py train STATE --beta1 0.99 --eps 1e-4 --epochs 40 --out B.pt --data-dir DIR
    python benchmarks/adam_fork.py eval STATE --k 100 A.pt B.pt ... --data-dir DIR

Why: the IWAE paper's text gives Adam beta1 = 0.9, but the code that made its table (yburda/iwae,
optimizers.py) defaults to beta1 = 0.99, starts the second moments at 1 and steps on the gradient summed
over the batch of 20 (so its epsilon of 1e-4 is 1e-4 / 20 on dgm's batch-mean gradient). docs/vae.md
reports the arms.

train: loads STATE (a VAE run's state.safetensors: weights and Adam's moments), sets beta1, epsilon and a
constant learning rate, and runs --epochs epochs of the run's batch size over full MNIST's training split
as --val-size gives it (the run's own held-out size, 400 by default; dynamic binarization, the model's own training step), printing each epoch's mean loss; the
weights go to --out (torch.save), and with --ema D1 D2 ... the moving averages of the weights with those
decays (base.ema_decay's warm-up, counted from the fork) to OUT.emaD1.pt and so on. Give each arm its own process (OMP_NUM_THREADS=1 beside each other).

eval: for each weights file (an arm's .pt, a state file or a checkpoint; FILE@average for the moving average of a
run trained with --ema), the test ELBO (mean of k log-weights) and the k-draw
importance-weighted bound, averaged over the 10,000 test images, with the same binarization (seed 123)
and the same draws (seed 7) for every file; then each file's per-image differences from the first file,
mean and standard error (paired, so most of the images' spread cancels).
"""

import argparse
import copy
import dataclasses
import json
import time

import torch
from safetensors.torch import load_file

from dgm_cli.data import load_dataset
from dgm_cli.errors import DgmError
from dgm_cli.models.base import adam, ema_decay
from dgm_cli.models.vae import log_mean_exp
from dgm_cli.registry import get_spec
from dgm_cli.speed import flush_subnormals
from dgm_cli.state import load_state


def dataset_of(args):
    """Full MNIST, split as --val-size says (give the held-out size the run's config.json records)."""
    return load_dataset("mnist", args.data_dir, val_size=args.val_size)


def model_of(state):
    """The run's network without a moving average (a run trained with --ema forks its live weights)."""
    return get_spec("vae").module_class(dataclasses.replace(state.config, ema=0.0))


def weights_of(spec: str) -> dict[str, torch.Tensor]:
    """FILE (an arm's .pt, a state file or a checkpoint): its live weights; FILE@average: the moving average a
    run trained with --ema kept beside them, as a plain network's weights."""
    path, _, part = spec.partition("@")
    if path.endswith(".pt"):
        tensors = torch.load(path)
    else:
        try:
            tensors = load_state(path).model
        except DgmError:  # not a state file: a checkpoint
            tensors = load_file(path)
    averaged = {name.removeprefix("average."): value for name, value in tensors.items() if name.startswith("average.")}
    if part == "average" and not averaged:
        raise SystemExit(f"{path} keeps no moving average of its weights")
    return (
        averaged if part == "average" else {name: v for name, v in tensors.items() if not name.startswith("average.")}
    )


def train(args) -> None:
    torch.manual_seed(args.seed)
    state = load_state(args.state)
    model = model_of(state)
    model.load_state_dict(weights_of(args.state))
    optimizer = adam(model.parameters(), lr=args.lr, eps=args.eps, betas=(args.beta1, 0.999))
    optimizer.load_state_dict(state.optimizers[0])  # the run's moments, then this arm's settings
    for group in optimizer.param_groups:
        group["lr"], group["eps"], group["betas"] = args.lr, args.eps, (args.beta1, 0.999)
    images = dataset_of(args).train.images
    batch_size = state.config.batch_size
    # A moving average of the weights per --ema decay; its warm-up counts the fork's own steps (the run's
    # step count is in Adam's state), so each average starts at the forked weights and settles from there.
    averages = {decay: copy.deepcopy(model).requires_grad_(False) for decay in args.ema}
    steps = 0
    for epoch in range(1, args.epochs + 1):
        started, order, total = time.perf_counter(), torch.randperm(len(images)), 0.0
        for first in range(0, len(images), batch_size):
            indices = order[first : first + batch_size]
            loss = model.training_step(images[indices])["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            for decay, averaged in averages.items():
                with torch.no_grad():
                    weight = 1 - ema_decay(decay, steps - 1)
                    torch._foreach_lerp_(list(averaged.parameters()), list(model.parameters()), weight)
            total += loss.item() * len(indices)
        print(
            json.dumps({"epoch": epoch, "train_loss": total / len(images), "s": time.perf_counter() - started}),
            flush=True,
        )
    torch.save(model.state_dict(), args.out)
    for decay, averaged in averages.items():
        torch.save(averaged.state_dict(), args.out.removesuffix(".pt") + f".ema{decay}.pt")


@torch.no_grad()
def evaluate(args) -> None:
    state = load_state(args.state)
    test = dataset_of(args).test.images
    per_image = {}
    for path in args.weights:
        model = model_of(state)
        model.load_state_dict(weights_of(path))
        model.eval()
        x = (torch.rand(test.shape, generator=torch.manual_seed(123)) * 255 < test.float()).float().flatten(1)
        torch.manual_seed(7)
        elbo, bound = [], []
        for first in range(0, len(x), 200):
            reconstruction, log_prior, log_q = model.log_weight_terms(x[first : first + 200], args.k)
            log_w = reconstruction + log_prior - log_q
            elbo.append(log_w.mean(1))
            bound.append(log_mean_exp(log_w, 1))
        elbo, bound = torch.cat(elbo), torch.cat(bound)
        print(json.dumps({"file": path, "elbo": elbo.mean().item(), f"iw{args.k}": bound.mean().item()}), flush=True)
        per_image[path] = {"elbo": elbo, f"iw{args.k}": bound}
    first, *others = args.weights
    for path in others:  # paired: the same images, binarization and draws, so most of their spread cancels
        differences = {name: values - per_image[first][name] for name, values in per_image[path].items()}
        print(
            json.dumps(
                {
                    "file": path,
                    "against": first,
                    **{
                        name: {"mean": value.mean().item(), "standard_error": (value.std() / len(value) ** 0.5).item()}
                        for name, value in differences.items()
                    },
                }
            ),
            flush=True,
        )


parser = argparse.ArgumentParser()
commands = parser.add_subparsers(dest="command", required=True)
for name in ("train", "eval"):
    command = commands.add_parser(name)
    command.add_argument("state", help="a VAE run's state.safetensors")
    command.add_argument("--data-dir", required=True)
    command.add_argument("--val-size", type=int, default=400, help="the run's held-out images (dgm train --val-size)")
fork = commands.choices["train"]
fork.add_argument("--beta1", type=float, default=0.9)
fork.add_argument("--eps", type=float, default=1e-4)
fork.add_argument("--lr", type=float, default=1e-4)
fork.add_argument("--epochs", type=int, default=40)
fork.add_argument("--seed", type=int, default=1)
fork.add_argument("--out", required=True)
fork.add_argument(
    "--ema",
    type=float,
    nargs="*",
    default=[],
    help="also keep moving averages of the weights with these decays, saved beside --out as OUT.emaDECAY.pt",
)
compare = commands.choices["eval"]
compare.add_argument("--k", type=int, default=100)
compare.add_argument("weights", nargs="+", help="FILE or FILE@average")

if __name__ == "__main__":
    flush_subnormals()
    args = parser.parse_args()
    train(args) if args.command == "train" else evaluate(args)
