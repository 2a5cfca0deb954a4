"""docs/performance.md's table of dgm against its peers, from the result.json files benchmarks/peers.py wrote.

python scripts/peers_table.py docs/performance/peers/*.json
"""

import json
import sys
from pathlib import Path

PEERS = {
    "vae": "pytorch/examples vae/main.py",
    "gan": "PyTorch-GAN dcgan.py",
    "diffusion": "denoising-diffusion-pytorch",
    "flow": "normflows multi-scale Glow",
}
MEASURES = {"vae": "test_nll_nats", "flow": "test_bits_per_dim"}  # the others: FID


def value(side: dict, family: str) -> float:
    return side["score"][MEASURES.get(family, "fid")]


def held_out(side: dict, family: str, other: dict) -> str:
    """The side's number, in bold where it is the better (lower) of the two."""
    score, digits = side["score"], 4 if family == "flow" else 2
    text = f"{value(side, family):.{digits}f}"
    if family in MEASURES:
        text += f" ± {score['standard_error']:.{digits}f}"
    return f"**{text}**" if value(side, family) < value(other, family) else text


def row(result: dict, path: Path) -> str:
    family, dgm, peer = result["family"], result["dgm"], result["peer"]
    measure = {"vae": "test NLL, nats", "flow": "test bits/dim"}.get(
        family, f"FID, {dgm['score'].get('samples', 0):,} samples"
    )
    if family == "diffusion":
        measure += f" at {dgm['score']['sampler_steps']} steps"
    floor = f" (real floor {dgm['score']['real_floor_fid']:.2f})" if family not in MEASURES else ""
    sampling = f"; sampling {result['ratios']['sampling_speed']:.2f}x" if "sampling_speed" in result["ratios"] else ""
    return (
        f"| {family} | {result['minutes']:g} min | {PEERS[family]} | {measure}{floor} | {held_out(dgm, family, peer)} | "
        f"{held_out(peer, family, dgm)} | {dgm['steps']:,} in {dgm['train_seconds']:,.0f} s / {peer['steps']:,} in {peer['train_seconds']:,.0f} s | "
        f"{result['ratios']['images_per_second']:.2f}x{sampling} | [{path.name}](performance/peers/{path.name}) |"
    )


def main(paths: list[str]) -> None:
    results = sorted(
        ((json.loads(Path(p).read_text()), Path(p)) for p in paths), key=lambda r: (r[0]["family"], r[0]["minutes"])
    )
    print(
        "| family | budget | peer | held-out number | dgm | peer | steps in training seconds, dgm / peer | images per second, dgm / peer "
        "| record |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for result, path in results:
        print(row(result, path))


if __name__ == "__main__":
    main(sys.argv[1:])
