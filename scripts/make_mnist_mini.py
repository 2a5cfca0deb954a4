"""Rebuild dgm_cli/assets/mnist-mini from the official MNIST files.

    python scripts/make_mnist_mini.py [RAW_DIR]

RAW_DIR holds the four official .gz files (default: ../shared/data/mnist/MNIST/raw).
Their MD5s are checked against the published ones (the MD5s torchvision checks)
before anything is written. The subset is the first 6,000 training digits (dgm
splits them into 5,000 train + 1,000 validation, the same last-sixth rule as the
full set) and the first 1,000 test digits, written as gzip IDX files.
"""

import gzip
import hashlib
import sys
from pathlib import Path

from dgm_cli.data import ASSETS, FILES, parse_idx, write_idx_gz

OFFICIAL_GZ_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
SUBSET_SIZES = {"train": 6000, "t10k": 1000}


def build(raw_dir: Path, out_dir: Path) -> dict[str, str]:
    """Write the subset into out_dir and return the MD5 of each file's unpacked contents."""
    out_dir.mkdir(parents=True, exist_ok=True)
    digests = {}
    for key, name in FILES.items():
        gz_bytes = (raw_dir / name).read_bytes()
        if hashlib.md5(gz_bytes).hexdigest() != OFFICIAL_GZ_MD5[name]:
            raise SystemExit(f"{raw_dir / name} is not the official file (MD5 mismatch)")
        values = parse_idx(gzip.decompress(gz_bytes), what=name)
        subset = values[: SUBSET_SIZES[name.split("-")[0]]]
        write_idx_gz(out_dir / name, subset)
        digests[key] = hashlib.md5(gzip.decompress((out_dir / name).read_bytes())).hexdigest()
    return digests


if __name__ == "__main__":
    raw = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parents[2] / "shared/data/mnist/MNIST/raw"
    for key, digest in build(raw, ASSETS / "mnist-mini").items():
        print(f"{key}: {digest}")
