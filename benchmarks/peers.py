"""dgm against its peers at equal wall-clock time and threads, scored by dgm's evaluators.

Each side trains for the same budget, counted from its first step to its last
(dgm: `dgm train FAMILY --minutes M`, whose clock also covers its validations
and the test at the end; the peer: its own training loop, stopped at the
deadline). By default both run at once, each pinned to a core of its own with
one thread (`--one-at-a-time` runs them one after the other with `--threads`).
Then both models are scored the same way: the VAE's test log-likelihood with
dgm's importance-weighted estimator, the flow's test bits/dim with dgm's
dequantized estimator (`--draws` uniform draws a digit), the GAN's and the
diffusion model's FID in dgm's feature space over `--samples` images (the
diffusion models' drawn at 50 sampler steps).

Peers run in their own virtual environments, installed by their package name
or run from their published example script; nothing of theirs is copied here.
This file is also the driver that runs inside a peer's environment
(`--peer-side`), where it imports only torch, torchvision and the peer.

    python3 -m venv ~/peers/ddpm
    ~/peers/ddpm/bin/pip install torch==2.14.1 torchvision==0.29.1 denoising-diffusion-pytorch
    python benchmarks/peers.py diffusion --minutes 15 --peer-python ~/peers/ddpm/bin/python \\
        --data-dir ../shared/data/mnist --out ~/dgm-runs/peers/diffusion-15

    python3 -m venv ~/peers/torch && ~/peers/torch/bin/pip install torch==2.14.1 torchvision==0.29.1
    git clone https://github.com/pytorch/examples ~/peers/examples
    python benchmarks/peers.py vae --minutes 15 --peer-python ~/peers/torch/bin/python \\
        --peer-script ~/peers/examples/vae/main.py --data-dir ../shared/data/mnist --out ~/dgm-runs/peers/vae-15

    python3 -m venv ~/peers/normflows
    ~/peers/normflows/bin/pip install torch==2.14.1 torchvision==0.29.1 normflows
    python benchmarks/peers.py flow --minutes 15 --peer-python ~/peers/normflows/bin/python \\
        --data-dir ../shared/data/mnist --out ~/dgm-runs/peers/flow-15

The peers as configured here:
- vae: pytorch/examples' vae/main.py as published (784-400-20, Adam 1e-3, batch 128, its per-epoch test
  pass and sample images), run until the deadline. It models grey levels (a continuous Bernoulli in its
  current version), dgm binarized pixels; both are scored on dgm's binarized test split, so its NLL is
  not its own objective's: the table says so beside the number.
- diffusion: denoising-diffusion-pytorch's Unet(dim=32, dim_mults=(1, 2, 4), channels=1),
  GaussianDiffusion(image_size=28, timesteps=1000, sampling_timesteps=50) and Trainer (batch 128, its
  default learning rate, EMA and gradient clipping; no horizontal flips, which would mirror digits), reading
  the 50,000 training-split digits as PNGs (written before its clock starts).
- flow: normflows' multi-scale Glow as its Glow example builds and trains it (16 GlowBlocks of 256 hidden
  channels a level, Adamax 1e-3, batch 128), with 2 levels for 28x28 and an unconditional base.
- gan: PyTorch-GAN's implementations/dcgan/dcgan.py as published (batch 64, Adam 2e-4), its 32x32 samples
  resized to 28x28.

Writes OUT/result.json (both sides' steps, seconds, images per second, scores, and the ratios) and prints it.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

TRAIN_IMAGES = 50_000  # dgm's training split: the first 50,000 digits of the official training file
SAMPLE_STEPS = 50
PNG_CACHE = Path.home() / ".cache" / "dgm-peers" / "mnist-train-png"  # the diffusion peer reads a folder of images


# ---------------------------------------------------------------- inside the peer's environment


class Deadline(Exception):
    pass


def mnist_digits(data_dir: Path, file: str):
    """The digits of one official MNIST image file (data_dir/MNIST/raw/FILE-images-idx3-ubyte.gz) as a uint8
    tensor (N, 28, 28), read as its format says: a big-endian header of counts, then the pixels."""
    import gzip

    import numpy as np
    import torch

    raw = gzip.decompress((Path(data_dir) / "MNIST" / "raw" / f"{file}-images-idx3-ubyte.gz").read_bytes())
    count, rows, columns = np.frombuffer(raw[4:16], dtype=">u4")
    pixels = np.frombuffer(raw[16:], dtype=np.uint8).reshape(int(count), int(rows), int(columns))
    return torch.from_numpy(pixels.copy())


def mnist_training_digits(data_dir: Path):
    return mnist_digits(data_dir, "train")[:TRAIN_IMAGES]


def link_mnist_archives(data_dir: Path, root: Path) -> None:
    """root/MNIST/raw holding links to the official archives: torchvision's MNIST unpacks them beside
    themselves, so the unpacked files land in the run's folder, not in the data folder the user named."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for archive in (Path(data_dir).resolve() / "MNIST" / "raw").glob("*-ubyte.gz"):
        if not (raw / archive.name).exists():
            (raw / archive.name).symlink_to(archive)


def peer_vae(args) -> dict:
    """pytorch/examples' vae/main.py, run as its own __main__ until the deadline; the weights its optimizer
    holds are saved in the order the script defines them."""
    import runpy

    import torch

    work = args.out / "work"
    (work / "results").mkdir(parents=True, exist_ok=True)  # where the script saves its images
    link_mnist_archives(args.data_dir, args.out / "data")  # the script reads ../data from its working folder
    original_step, holder = torch.optim.Adam.step, {}
    state = {"steps": 0, "started": None}

    def step_until_the_deadline(self, *step_args, **kwargs):
        if state["started"] is None:
            state["started"] = time.perf_counter()
        result = original_step(self, *step_args, **kwargs)
        state["steps"] += 1
        holder["optimizer"] = self
        if time.perf_counter() - state["started"] >= 60 * args.minutes:
            raise Deadline
        return result

    torch.optim.Adam.step = step_until_the_deadline
    os.chdir(work)
    sys.argv = [str(args.peer_script), "--epochs", "1000000"]
    try:
        runpy.run_path(str(args.peer_script), run_name="__main__")
    except Deadline:
        pass
    seconds = time.perf_counter() - state["started"]
    names = [f"{layer}.{kind}" for layer in ("fc1", "fc21", "fc22", "fc3", "fc4") for kind in ("weight", "bias")]
    parameters = holder["optimizer"].param_groups[0]["params"]
    torch.save({name: tensor.detach().clone() for name, tensor in zip(names, parameters)}, args.out / "weights.pt")
    return {"steps": state["steps"], "batch_size": 128, "train_seconds": round(seconds, 1)}


def peer_diffusion(args) -> dict:
    """denoising-diffusion-pytorch's Trainer on the training digits as PNGs until the deadline, then its EMA
    model's samples at 50 DDIM steps."""
    import numpy as np
    import torch
    from denoising_diffusion_pytorch import GaussianDiffusion, Trainer, Unet
    from PIL import Image

    folder = PNG_CACHE  # written once, before the clock starts
    if not (folder / f"{TRAIN_IMAGES - 1}.png").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        for index, digit in enumerate(mnist_training_digits(Path(args.data_dir)).numpy()):
            Image.fromarray(digit).save(folder / f"{index}.png")
    model = Unet(dim=32, dim_mults=(1, 2, 4), channels=1)
    diffusion = GaussianDiffusion(model, image_size=28, timesteps=1000, sampling_timesteps=SAMPLE_STEPS)
    trainer = Trainer(
        diffusion,
        str(folder),
        train_batch_size=128,
        train_num_steps=10**9,
        save_and_sample_every=10**9,
        calculate_fid=False,
        augment_horizontal_flip=False,
        amp=False,
        results_folder=str(args.out / "results"),
    )
    # The clock starts at the first batch, as dgm's starts after its data are read: the Trainer's DataLoader
    # workers take seconds to start and to list 50,000 files.
    clock, forward, update = {}, trainer.model.forward, trainer.ema.update

    def timed_forward(*forward_args, **kwargs):
        clock.setdefault("started", time.perf_counter())
        return forward(*forward_args, **kwargs)

    def update_until_the_deadline():
        update()
        if time.perf_counter() - clock["started"] >= 60 * args.minutes:
            trainer.train_num_steps = trainer.step  # the loop ends after this step

    trainer.model.forward, trainer.ema.update = timed_forward, update_until_the_deadline
    trainer.train()
    seconds = time.perf_counter() - clock["started"]
    sampling = time.perf_counter()
    sampler = trainer.ema.ema_model.eval()
    with torch.inference_mode():
        images = [sampler.sample(batch_size=min(500, args.samples - done)) for done in range(0, args.samples, 500)]
    images = (torch.cat(images).clamp(0, 1) * 255).round().to(torch.uint8).squeeze(1).numpy()
    np.savez_compressed(args.out / "samples.npz", images=images)
    parameters = sum(p.numel() for p in model.parameters())
    return {
        "steps": trainer.step,
        "batch_size": 128,
        "train_seconds": round(seconds, 1),
        "sampling_seconds": round(time.perf_counter() - sampling, 1),
        "parameters": parameters,
    }


def peer_gan(args) -> dict:
    """PyTorch-GAN's implementations/dcgan/dcgan.py as published (32x32 digits, batch 64, Adam 2e-4 with
    beta1 0.5), run in a namespace of ours until the deadline; then its generator's samples, resized to the
    28x28 that the feature network reads."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    work = args.out / "work" / "implementations" / "dcgan"  # the script reads ../../data/mnist from here
    work.mkdir(parents=True, exist_ok=True)
    link_mnist_archives(args.data_dir, args.out / "work" / "data" / "mnist")
    namespace = {"__name__": "__main__", "__file__": str(args.peer_script)}
    original_step, state = torch.optim.Adam.step, {"steps": 0, "started": None}

    def step_until_the_deadline(self, *step_args, **kwargs):
        state["started"] = state["started"] or time.perf_counter()
        result = original_step(self, *step_args, **kwargs)
        if self is namespace.get("optimizer_D"):  # a whole step: the generator's, then the discriminator's
            state["steps"] += 1
            if time.perf_counter() - state["started"] >= 60 * args.minutes:
                raise Deadline
        return result

    torch.optim.Adam.step = step_until_the_deadline
    os.chdir(work)
    sys.argv = [str(args.peer_script)]
    try:
        exec(compile(Path(args.peer_script).read_text(), str(args.peer_script), "exec"), namespace)
    except Deadline:
        pass
    seconds = time.perf_counter() - state["started"]
    sampling = time.perf_counter()
    generator = namespace["generator"].eval()
    torch.manual_seed(0)
    with torch.inference_mode():
        images = torch.cat(
            [generator(torch.randn(min(500, args.samples - done), 100)) for done in range(0, args.samples, 500)]
        )
        images = F.interpolate((images + 1) / 2, size=(28, 28), mode="bilinear", antialias=True)
    images = (images.clamp(0, 1) * 255).round().byte().squeeze(1).numpy()
    np.savez_compressed(args.out / "samples.npz", images=images)
    return {
        "steps": state["steps"],
        "batch_size": 64,
        "train_seconds": round(seconds, 1),
        "sampling_seconds": round(time.perf_counter() - sampling, 1),
    }


def multiscale_glow(nf):
    """normflows' multi-scale Glow as its Glow example builds it for CIFAR-10 (K = 16 GlowBlocks a level, 256
    hidden channels, channel splits, affine couplings with Glow's sigmoid scale, a Gaussian base of learned
    mean and scale for each level's latent), set up for 28x28x1: L = 2 levels, as 28 halves twice but not
    three times, and an unconditional base (the example's is class-conditional; dgm's flow models p(x))."""
    levels, blocks, channels, hidden, height = 2, 16, 1, 256, 28
    bases, merges, flows = [], [], []
    for level in range(levels):
        width = channels * 2 ** (levels + 1 - level)  # the channels this level's blocks see, after the squeeze
        flows.append(
            [nf.flows.GlowBlock(width, hidden, split_mode="channel", scale=True) for _ in range(blocks)]
            + [nf.flows.Squeeze()]
        )
        if level > 0:
            merges.append(nf.flows.Merge())
            shape = (channels * 2 ** (levels - level), height // 2 ** (levels - level), height // 2 ** (levels - level))
        else:
            shape = (channels * 2 ** (levels + 1), height // 2**levels, height // 2**levels)
        bases.append(nf.distributions.DiagGaussian(shape))
    return nf.MultiscaleFlow(bases, flows, merges, class_cond=False)


def peer_flow(args) -> dict:
    """normflows' multi-scale Glow trained as its Glow example trains it (Adamax 1e-3, weight decay 1e-5,
    batch 128, a step skipped when its loss is not finite; pixels k in {0..255} dequantized to (k + u) / 256,
    u uniform) on the training digits until the deadline. Then log p(x + u) of every test digit for --draws
    uniform draws u, in nats of dgm's scale (x + u in [0, 256)^784, so that 784 log 256 leaves the density),
    saved for dgm's estimators to summarise."""
    import math

    import normflows as nf
    import numpy as np
    import torch

    torch.manual_seed(0)
    model = multiscale_glow(nf)
    optimizer = torch.optim.Adamax(model.parameters(), lr=1e-3, weight_decay=1e-5)
    digits = mnist_training_digits(Path(args.data_dir)).unsqueeze(1).float()
    steps, skipped, started, batch = 0, 0, None, 128
    while started is None or time.perf_counter() - started < 60 * args.minutes:
        for rows in torch.randperm(len(digits)).split(batch)[:-1]:  # the example's loader drops the last
            images = (digits[rows] + torch.rand(batch, 1, 28, 28)) / 256
            started = started or time.perf_counter()
            optimizer.zero_grad()
            loss = model.forward_kld(images)
            if torch.isfinite(loss):
                loss.backward()
                optimizer.step()
            else:
                skipped += 1
            steps += 1
            if time.perf_counter() - started >= 60 * args.minutes:
                break
    seconds = time.perf_counter() - started
    scoring = time.perf_counter()
    test = mnist_digits(Path(args.data_dir), "t10k").unsqueeze(1).float()
    model.eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        log_weights = torch.stack(
            [
                torch.cat(
                    [
                        model.log_prob((chunk + torch.rand(chunk.shape, generator=generator)) / 256, None)
                        for chunk in test.split(500)
                    ]
                )
                for _ in range(args.draws)
            ],
            dim=1,
        ).double() - 784 * math.log(256)
    np.save(args.out / "test_log_weights.npy", log_weights.numpy())
    return {
        "steps": steps,
        "skipped_steps": skipped,
        "batch_size": batch,
        "train_seconds": round(seconds, 1),
        "scoring_seconds": round(time.perf_counter() - scoring, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


PEER_SIDES = {"vae": peer_vae, "gan": peer_gan, "diffusion": peer_diffusion, "flow": peer_flow}
SAMPLED = {"gan": 10_000, "diffusion": 1_000}  # images each side draws for FID (the diffusion peer's are slow)


# ---------------------------------------------------------------- dgm's side (dgm's environment)


def dgm_samples(args) -> dict:
    """The trained dgm model's samples at its default sampler (50 steps), as an .npz for the scorer."""
    import numpy as np

    import dgm_cli as dgm

    model = dgm.load(args.out / "run" / "last.safetensors", device="cpu")
    started = time.perf_counter()
    images = model.sample(args.samples, seed=0, **({"steps": SAMPLE_STEPS} if args.family == "diffusion" else {}))
    images = (images.clamp(0, 1) * 255).round().byte().squeeze(1).numpy()
    np.savez_compressed(args.out / "samples.npz", images=images)
    return {"sampling_seconds": round(time.perf_counter() - started, 1)}


def pinned(core: int | None, threads: int) -> dict:
    """subprocess options: OMP/MKL threads, and with `core` the process (and its children) on that core."""
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    preexec = (lambda: os.sched_setaffinity(0, {core})) if core is not None else None
    return {"env": environment, "preexec_fn": preexec}


def launch(command: list[str], log: Path, core: int | None, threads: int) -> tuple[subprocess.Popen, float]:
    log.parent.mkdir(parents=True, exist_ok=True)
    handle = open(log, "w")
    return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, **pinned(core, threads)), time.time()


def wait(process: subprocess.Popen, started: float, what: str, log: Path) -> float:
    if process.wait() != 0:
        sys.exit(f"{what} failed (exit {process.returncode}); see {log}")
    return round(time.time() - started, 1)


def train_both(args) -> dict:
    """Both trainings, at once on a core each (default) or one after the other; what each reported."""
    here = Path(__file__).resolve()
    dgm_out, peer_out = args.out / "dgm", args.out / "peer"
    dgm_command = [sys.executable, "-m", "dgm_cli", "train", args.family, "--minutes", str(args.minutes)]
    dgm_command += ["--data-dir", str(args.data_dir), "--out", str(dgm_out / "run"), "--checkpoint-dir"]
    dgm_command += [str(dgm_out / "checkpoints")]
    peer_command = [str(args.peer_python), str(here), args.family, "--peer-side", "--minutes", str(args.minutes)]
    peer_command += ["--data-dir", str(args.data_dir), "--out", str(peer_out), "--samples", str(args.samples)]
    if args.peer_script:
        peer_command += ["--peer-script", str(args.peer_script)]
    if args.family == "flow":
        peer_command += ["--draws", str(args.draws)]
    sides = [("dgm", dgm_command, dgm_out / "train.log", 0), ("peer", peer_command, peer_out / "train.log", 1)]
    walls = {}
    if args.one_at_a_time:
        for name, command, log, _ in sides:
            process, started = launch(command, log, None, args.threads)
            walls[name] = wait(process, started, name, log)
    else:
        running = {name: (*launch(command, log, core, 1), log) for name, command, log, core in sides}
        while len(walls) < len(running):  # each side's own end, whichever comes first
            for name, (process, started, log) in running.items():
                if name not in walls and process.poll() is not None:
                    walls[name] = wait(process, started, name, log)
            time.sleep(0.2)
    return walls


def dgm_side_facts(out: Path) -> dict:
    from dgm_cli.run_status import summarize

    records = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    config = json.loads((out / "run" / "config.json").read_text())["config"]
    first_step = records[0]["budget"]["steps_from"]
    train_seconds = records[-1]["elapsed"] - first_step
    return {
        "steps": records[-1]["step"],
        "batch_size": config["batch_size"],
        "train_seconds": round(train_seconds, 1),
        "budget_seconds_spent": records[-1]["elapsed"],  # the last epoch's record, before the test evaluation
        "run_clock_seconds": summarize(out / "run").wall_seconds,  # the budget's clock at the end, test included
    }


def peer_vae_as_dgm(weights_path: Path):
    """pytorch/examples' VAE in dgm's VAE of the same shape: fc21/fc22 (mean, log-variance) are the two halves
    of dgm's encoder head, fc3/fc4 its decoder. The script's decoder clamps probabilities to [1e-4, 1 - 1e-4];
    dgm's reads the logits unclamped."""
    import torch

    import dgm_cli as dgm

    weights = torch.load(weights_path)
    model = dgm.create_model("vae", hidden=400, zdim=20)
    state = {
        "encoder.0.weight": weights["fc1.weight"],
        "encoder.0.bias": weights["fc1.bias"],
        "encoder.2.weight": torch.cat([weights["fc21.weight"], weights["fc22.weight"]]),
        "encoder.2.bias": torch.cat([weights["fc21.bias"], weights["fc22.bias"]]),
        "decoder.0.weight": weights["fc3.weight"],
        "decoder.0.bias": weights["fc3.bias"],
        "decoder.2.weight": weights["fc4.weight"],
        "decoder.2.bias": weights["fc4.bias"],
    }
    model.load_state_dict(state, strict=True)
    return model.eval()


def score(args, sides: dict) -> None:
    """Each side's held-out number by dgm's evaluators, into sides[...]['score']."""
    import dgm_cli as dgm

    if args.family == "vae":
        models = {
            "dgm": dgm.load(args.out / "dgm" / "run" / "last.safetensors", device="cpu"),
            "peer": peer_vae_as_dgm(args.out / "peer" / "weights.pt"),
        }
        for name, model in models.items():
            report = dgm.evaluate(
                model,
                data="mnist",
                data_dir=args.data_dir,
                iw_samples=args.iw_samples,
                mc_samples=0,
                samples=0,
                minutes=None,  # the full protocol: every test image
            )
            estimate = report.likelihood["importance_weighted"]
            sides[name]["score"] = {
                "test_nll_nats": round(-estimate["nats"], 3),
                "standard_error": round(estimate["standard_error"], 3),
                "estimator": f"importance-weighted, k = {args.iw_samples}, binarized test split",
            }
        return
    if args.family == "flow":
        score_flows(args, sides)
        return
    for name in ("dgm", "peer"):
        quality = dgm.sample_quality(args.out / name / "samples.npz", dataset="mnist", data_dir=args.data_dir)
        model, floor = quality["sample_quality"]["model"], quality["sample_quality"]["real_floor"]
        sides[name]["score"] = {
            "fid": round(model["fid"], 3),
            "real_floor_fid": round(floor["fid"], 3),
            "samples": args.samples,
            **({"sampler_steps": SAMPLE_STEPS} if args.family == "diffusion" else {}),
        }


def score_flows(args, sides: dict) -> None:
    """Test bits/dim of both flows: dgm's by `dgm eval`'s estimator, the peer's by the same estimator's
    summary of the log p(x + u) its side computed for the same number of uniform draws a digit."""
    import numpy as np
    import torch

    import dgm_cli as dgm
    from dgm_cli.estimators import Estimate, RunningLogWeights

    model = dgm.load(args.out / "dgm" / "run" / "last.safetensors", device="cpu")
    report = dgm.evaluate(
        model, data="mnist", data_dir=args.data_dir, dequantization_draws=args.draws, samples=0, minutes=None
    )
    estimates = {"dgm": report.likelihood["dequantized"]}
    log_weights = torch.from_numpy(np.load(args.out / "peer" / "test_log_weights.npy"))
    running = RunningLogWeights(len(log_weights), torch.device("cpu"))
    running.add(log_weights)
    label = f"uniform dequantization, mean over {args.draws} draw(s)"
    estimates["peer"] = Estimate(label, args.draws, running.mean_log()).summary()
    for name, estimate in estimates.items():
        sides[name]["score"] = {
            "test_bits_per_dim": round(estimate["bits_per_dim"], 4),
            "standard_error": round(estimate["bits_per_dim_standard_error"], 4),
            "estimator": f"{estimate['label']}, the 10,000 test digits",
        }


def compare(args) -> dict:
    walls = train_both(args)
    sides = {
        "dgm": dgm_side_facts(args.out / "dgm"),
        "peer": json.loads((args.out / "peer" / "facts.json").read_text()),
    }
    for name, wall in walls.items():
        sides[name]["command_seconds"] = wall
    if args.family in SAMPLED:  # dgm's samples, on one core as the peer drew its own
        command = [sys.executable, str(Path(__file__).resolve()), args.family, "--dgm-samples", "--minutes", "0"]
        command += ["--out", str(args.out / "dgm"), "--samples", str(args.samples)]
        process, started = launch(command, args.out / "dgm" / "samples.log", 0, 1)
        wait(process, started, "dgm's sampling", args.out / "dgm" / "samples.log")
        sides["dgm"].update(json.loads((args.out / "dgm" / "sampling.json").read_text()))
    score(args, sides)
    for side in sides.values():
        side["images_per_second"] = round(side["steps"] * side["batch_size"] / side["train_seconds"], 1)
    result = {
        "family": args.family,
        "minutes": args.minutes,
        "threads": args.threads if args.one_at_a_time else "1 each, side by side on a core each",
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "dgm": sides["dgm"],
        "peer": sides["peer"],
        "ratios": {
            "images_per_second": round(sides["dgm"]["images_per_second"] / sides["peer"]["images_per_second"], 2),
            "steps_per_second": round(
                (sides["dgm"]["steps"] / sides["dgm"]["train_seconds"])
                / (sides["peer"]["steps"] / sides["peer"]["train_seconds"]),
                2,
            ),
        },
    }
    if args.family == "diffusion":  # a GAN draws its samples in a blink
        result["ratios"]["sampling_speed"] = round(
            sides["peer"]["sampling_seconds"] / sides["dgm"]["sampling_seconds"], 2
        )
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("family", choices=sorted(PEER_SIDES))
    parser.add_argument("--minutes", type=float, required=True, help="Each side's training budget.")
    parser.add_argument("--out", type=Path, required=True, help="A new folder for both runs and result.json.")
    parser.add_argument("--data-dir", type=Path, help="The folder holding MNIST/raw (the official files).")
    parser.add_argument("--peer-python", type=Path, help="The python of the peer's virtual environment.")
    parser.add_argument(
        "--peer-script", type=Path, help="vae: pytorch/examples' vae/main.py; gan: PyTorch-GAN's dcgan.py."
    )
    parser.add_argument("--samples", type=int, help="gan, diffusion: images each side draws for FID (10,000; 1,000).")
    parser.add_argument("--iw-samples", type=int, default=1000, help="vae: posterior draws per test image.")
    parser.add_argument("--draws", type=int, default=1, help="flow: dequantization draws per test image.")
    parser.add_argument("--one-at-a-time", action="store_true", help="Run the sides one after the other.")
    parser.add_argument("--threads", type=int, default=2, help="With --one-at-a-time: threads of each side.")
    parser.add_argument("--peer-side", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dgm-samples", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out = args.out.resolve()
    args.samples = args.samples or SAMPLED.get(args.family, 0)
    if args.peer_side:
        args.out.mkdir(parents=True, exist_ok=True)
        facts = PEER_SIDES[args.family](args)
        (args.out / "facts.json").write_text(json.dumps(facts) + "\n")
        return
    if args.dgm_samples:
        (args.out / "sampling.json").write_text(json.dumps(dgm_samples(args)) + "\n")
        return
    if args.peer_python is None or args.data_dir is None:
        parser.error("--peer-python and --data-dir are needed")
    if args.family in ("vae", "gan") and args.peer_script is None:
        parser.error(f"{args.family} needs --peer-script: the peer's published example script")
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"{args.out} is not empty; name a new folder")
    print(json.dumps(compare(args), indent=2))


if __name__ == "__main__":
    main()
