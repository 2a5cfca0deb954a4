"""Curves of the IWAE-table runs: each run's training bound on the validation split against epochs and against
training time, with the published test NLL of its preset and dgm's k=5000 test estimates where evaluated.

    python scripts/iwae_curves.py RUN_DIR [RUN_DIR ...] --out docs/vae/iwae_curves.png [--evals A.eval.json ...]

Each RUN_DIR is a `dgm train vae --preset ...` run folder; its metrics.jsonl gives the validation bound
(val_iwae, the k-sample bound the run trains, else val_elbo) and the seconds of each epoch. An --evals file
is a `dgm eval ... --result` report of a checkpoint of one of the runs (its preset names the run); it is
drawn as a point at the epoch its checkpoint holds.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--evals", nargs="*", type=Path, default=[])
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dgm_cli.checkpoint import read_header
    from dgm_cli.models.vae import PRESETS

    figure, (by_epoch, by_time) = plt.subplots(1, 2, figsize=(11, 4))
    evaluated = [json.loads(path.read_text()) for path in args.evals]
    for run in args.runs:
        facts = json.loads((run / "config.json").read_text())
        preset = facts["config"]["preset"]
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][1:]
        key = "val_iwae" if "val_iwae" in records[-1] else "val_elbo"
        epochs = [r["epoch"] for r in records]
        hours, total = [], 0.0
        for record in records:
            total += record["seconds"] / 3600
            hours.append(total)
        nll = [-r[key] for r in records]
        line = by_epoch.plot(epochs, nll, label=f"{preset} ({key.removeprefix('val_')}, validation)")[0]
        by_time.plot(hours, nll, color=line.get_color(), label=preset)
        for axis in (by_epoch, by_time):
            axis.axhline(PRESETS[preset].published, color=line.get_color(), linestyle="--", linewidth=1)
        for report in evaluated:
            header = read_header(Path(report["checkpoint"]))
            if header.config.preset == preset:
                epoch = header.train["epoch"]
                value = -report["likelihood"]["importance_weighted"]["nats"]
                by_epoch.plot([epoch], [value], "o", color=line.get_color(), label=f"{preset}: test, k=5000")
                by_time.plot([hours[epochs.index(epoch)]], [value], "o", color=line.get_color())
    for axis, label in ((by_epoch, "epoch"), (by_time, "training time (hours, 2-core CPU)")):
        axis.set_xlabel(label)
        axis.set_ylabel("negative bound / NLL (nats)")
        axis.set_ylim(bottom=80, top=125)
        axis.grid(alpha=0.3)
    by_epoch.legend(fontsize=7)
    by_epoch.set_title("dashed: published test NLL of the preset", fontsize=9)
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
