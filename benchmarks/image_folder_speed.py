"""How fast dgm reads a folder of images, against Pillow's own decode rate, and how much memory it takes.

    python benchmarks/image_folder_speed.py --data-dir ../shared/data/mnist [--folder /tmp/mnist-png] [--repeats 3]

Writes the 70,000 MNIST digits as 28x28 grayscale PNGs (train/CLASS/*.png and
test/CLASS/*.png; kept in --folder for later runs), then measures, each in a
fresh process so that one's memory does not count in another's:

* Pillow alone: open, decode and copy every file into one uint8 array in a loop,
  one process (the rate a careful hand-written loader gets);
* dgm's first read (`load_dataset(FOLDER)`, no cache): with its default process
  pool and with one process, including the listing, the MD5s of the splits and
  the write of the cache;
* dgm's cached read (the same listing again), the median of --repeats;
* the peak resident memory of each, above the process's size before the read
  (ru_maxrss), beside the size of the final uint8 tensor.

Medians over --repeats of the timings; machine noise is large, so the rows are
measured side by side in one run.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

CHILD = r"""
import json, os, resource, sys, time
sys.path.insert(0, {repo!r})
import numpy as np
from PIL import Image
import torch
from dgm_cli import image_folder
from dgm_cli.data import load_dataset
mode, folder = sys.argv[1], sys.argv[2]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
start = time.perf_counter()
if mode == "pillow":
    paths = []
    for current, dirs, names in os.walk(folder):
        dirs.sort()
        paths += [os.path.join(current, name) for name in sorted(names) if name.endswith(".png")]
    out = np.empty((len(paths), 28, 28), np.uint8)
    for i, path in enumerate(paths):
        with Image.open(path) as image:
            out[i] = np.asarray(image)
    count = len(paths)
else:
    if mode == "dgm-serial":
        image_folder.PARALLEL_FROM = 10**12
    dataset = load_dataset(folder)
    count = len(dataset.train) + len(dataset.val) + len(dataset.test)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({{"seconds": seconds, "images": count, "peak_above_start": peak - before}}))
"""


def write_folder(folder: Path, data_dir: Path) -> None:
    from PIL import Image

    from dgm_cli.data import load_dataset

    if (folder / "done").exists():
        return
    mnist = load_dataset("mnist", data_dir)
    splits = {"train": [mnist.train, mnist.val], "test": [mnist.test]}
    for split, parts in splits.items():
        index = 0
        for part in parts:
            for image, label in zip(part.images, part.labels):
                target = folder / split / str(int(label))
                target.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image.numpy()).save(target / f"{index:05d}.png")
                index += 1
    (folder / "done").write_text("")


def measure(mode: str, folder: Path, cache: Path, *, fresh_cache: bool) -> dict:
    env = {**os.environ, "DGM_CACHE_DIR": str(cache)}
    if fresh_cache:
        for entry in (cache / "image-folders").glob("*") if (cache / "image-folders").exists() else []:
            entry.unlink()
    code = CHILD.format(repo=str(HERE.parent))
    output = subprocess.run(
        [sys.executable, "-c", code, mode, str(folder)], env=env, check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="The MNIST root (MNIST/raw/*.gz).")
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "dgm-mnist-png")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from dgm_cli.device import describe_device

    write_folder(args.folder, args.data_dir)
    cache = Path(tempfile.mkdtemp(prefix="dgm-cache-"))
    rows = {
        "pillow loop, 1 process": [],
        "dgm first read, process pool": [],
        "dgm first read, 1 process": [],
        "dgm cached read": [],
    }
    for _ in range(args.repeats):  # interleaved, so machine noise touches every row alike
        rows["pillow loop, 1 process"].append(measure("pillow", args.folder, cache, fresh_cache=True))
        rows["dgm first read, process pool"].append(measure("dgm", args.folder, cache, fresh_cache=True))
        rows["dgm cached read"].append(measure("dgm", args.folder, cache, fresh_cache=False))
        rows["dgm first read, 1 process"].append(measure("dgm-serial", args.folder, cache, fresh_cache=True))
    images = rows["dgm cached read"][0]["images"]
    final = images * 28 * 28
    print(
        f"{images:,} PNGs of {args.folder}; {describe_device(torch.device('cpu'))}; {os.cpu_count()} logical CPUs; "
        f"final uint8 tensor {final / 2**20:.1f} MiB; medians of {args.repeats}"
    )
    print(f"{'read':<32} {'seconds':>8} {'images/s':>10} {'peak RSS above start':>22}")
    for name, runs in rows.items():
        seconds = statistics.median(run["seconds"] for run in runs)
        peak = statistics.median(run["peak_above_start"] for run in runs)
        print(f"{name:<32} {seconds:>8.2f} {images / seconds:>10,.0f} {peak / 2**20:>15.1f} MiB ({peak / final:.2f}x)")


if __name__ == "__main__":
    main()
