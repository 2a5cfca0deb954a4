"""A diffusion model's samplers side by side: denoising steps against sample quality and time.

    python benchmarks/diffusion_samplers.py CKPT --data-dir ../shared/data/mnist \
        [--samples 2000] [--configs ddim:10,ddim:20,ddim:50,ancestral:1000] [--ancestral-samples 500] [--threads 1]

A configuration is METHOD:STEPS or ddim:STEPS:ETA (DDIM with the noise eta,
`dgm sample --eta`; eta 1 is the ancestral sampler respaced to STEPS steps).
For each sampler configuration: draws --samples images (--ancestral-samples
for the ancestral sampler, whose 1,000 steps cost 20 times DDIM's 50) with
the checkpoint's averaged weights and seed 0, timing the sampling alone
(images/s), then measures them with the feature network that fits the data
(FID, KID, precision/recall, IS against the test split) beside the real floor
of as many held-out images: FID depends on the count, so compare rows only at
equal counts. Prints a markdown table, a row as each configuration is
measured, and, with --json, one JSON object at the end.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--ancestral-samples", type=int, default=500)
    parser.add_argument("--configs", default="ddim:10,ddim:20,ddim:50,ancestral:1000")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from dgm_cli.checkpoint import load_checkpoint
    from dgm_cli.data import trained_dataset
    from dgm_cli.device import describe_device
    from dgm_cli.feature_network import feature_network
    from dgm_cli.metrics import sample_quality
    from dgm_cli.sampling import sample_images

    model, info = load_checkpoint(args.checkpoint)
    data = trained_dataset(info.data, args.data_dir, what=str(args.checkpoint))
    features = feature_network(data.describe(), model.device)
    print(
        f"{args.checkpoint}, epoch {info.train.get('epoch')}; {describe_device(model.device)}, "
        f"{torch.get_num_threads()} thread(s); feature network: {features.path.name}"
    )
    print(
        "| sampler | steps | eta | samples | images/s | FID (real floor) | KID | precision | recall | Inception Score |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
    rows = []
    for config in args.configs.split(","):  # each row printed as it is measured, so a long run can be cut short
        method, steps, *eta = config.split(":")
        eta = float(eta[0]) if eta else 0.0
        count = args.ancestral_samples if method == "ancestral" else args.samples
        options = {"sampler": method} if method == "ancestral" else {"sampler": method, "steps": int(steps), "eta": eta}
        started = time.perf_counter()
        images = sample_images(model, count, seed=0, **options)
        seconds = time.perf_counter() - started
        quality = sample_quality(
            features.classifier, images, data.test.images.float() / 255, data.val.images.float() / 255
        )
        rows.append(
            {
                "sampler": method,
                "steps": int(steps),
                "eta": eta,
                "samples": count,
                "seconds": seconds,
                "images_per_second": count / seconds,
                "model": quality["model"],
                "real_floor": quality["real_floor"],
            }
        )
        m, f = quality["model"], quality["real_floor"]
        print(
            f"| {method} | {steps} | {eta:g} | {count:,} | {count / seconds:.1f} | "
            f"{m['fid']:.2f} ({f['fid']:.2f}) | {m['kid']:.4f} | {m['precision']:.3f} | {m['recall']:.3f} | "
            f"{m['inception_score']:.2f} |",
            flush=True,
        )
    if args.json:
        print(json.dumps({"checkpoint": str(args.checkpoint), "rows": rows}))


if __name__ == "__main__":
    main()
