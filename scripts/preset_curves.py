"""Curves of preset runs: each run's validation metric against epochs and against training time, with the
published number of its preset (dashed) and dgm's own evaluations by the published protocol (dots).

    python scripts/preset_curves.py RUN [RUN ...] --out FIGURE.png [--evals A.eval.json ...] [--ylim LOW HIGH]

Each RUN is a `dgm train MODEL --preset ...` run folder, or the files of one kept as PREFIX.config.json and
PREFIX.metrics.jsonl (as docs/vae/iwae/ keeps them; give PREFIX); its metrics.jsonl gives the validation
metric and the seconds of each epoch, and its name (the folder's, or PREFIX's last part) labels its curve. The metric is the model's monitored one: the VAE's validation bound (val_iwae,
the k-sample bound the run trains, else val_elbo) as a negative log-likelihood in nats, the flow's val_bpd.
An --evals file is a `dgm eval ... --result` report of a checkpoint of one of the runs (its preset names the
run: the checkpoint's configuration is the run's); it is drawn at the epoch its checkpoint holds, in the
preset protocol's units.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def validation_curve(model: str, records: list[dict]) -> tuple[str, list[float]]:
    """(label, values) of the run's validation metric in the units its preset's number is published in."""
    if model == "vae":
        key = "val_iwae" if "val_iwae" in records[-1] else "val_elbo"
        return f"{key.removeprefix('val_')}, validation, nats", [-r[key] for r in records]
    return "validation bits/dim", [r["val_bpd"] for r in records]


def run_files(run: Path) -> tuple[Path, Path]:
    """(config.json, metrics.jsonl) of a run folder, or of a run's files kept under a common prefix."""
    if run.is_dir():
        return run / "config.json", run / "metrics.jsonl"
    return run.with_name(run.name + ".config.json"), run.with_name(run.name + ".metrics.jsonl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--evals", nargs="*", type=Path, default=[])
    parser.add_argument("--ylim", nargs=2, type=float, help="the vertical range (default: matplotlib's)")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dgm_cli import config as config_tools
    from dgm_cli.checkpoint import read_header
    from dgm_cli.presets import measured_value
    from dgm_cli.registry import get_spec

    figure, (by_epoch, by_time) = plt.subplots(1, 2, figsize=(11, 4))
    evaluated = [json.loads(path.read_text()) for path in args.evals]
    units = set()
    for run in args.runs:
        config_file, metrics_file = run_files(run)
        facts = json.loads(config_file.read_text())
        model, name = facts["model"], facts["config"]["preset"]
        preset = get_spec(model).presets[name]
        run_config = config_tools.from_stored(get_spec(model).config_class, facts["config"])
        records = [json.loads(line) for line in metrics_file.read_text().splitlines()][1:]
        records = [r for r in records if not r.get("diverged")]
        label, values = validation_curve(model, records)
        units.add(preset.metric)
        epochs = [r["epoch"] for r in records]
        hours, total = [], 0.0
        for record in records:
            total += record["seconds"] / 3600
            hours.append(total)
        line = by_epoch.plot(epochs, values, label=f"{run.name} ({label})")[0]
        by_time.plot(hours, values, color=line.get_color(), label=run.name)
        for axis in (by_epoch, by_time):
            axis.axhline(preset.published, color=line.get_color(), linestyle="--", linewidth=1)
        for report in evaluated:
            header = read_header(Path(report["checkpoint"]))
            value = measured_value(report, preset.protocol)
            if header.config == run_config and value is not None and header.train["epoch"] in epochs:
                epoch = header.train["epoch"]
                by_epoch.plot([epoch], [value[0]], "o", color=line.get_color(), label=f"{run.name}: test, the protocol")
                by_time.plot([hours[epochs.index(epoch)]], [value[0]], "o", color=line.get_color())
    for axis, label in ((by_epoch, "epoch"), (by_time, "training time (hours, 2-core CPU)")):
        axis.set_xlabel(label)
        axis.set_ylabel("lines: validation; dots, dashes: the published protocol", fontsize=8)
        if args.ylim:
            axis.set_ylim(*args.ylim)
        axis.grid(alpha=0.3)
    by_epoch.legend(fontsize=7)
    by_epoch.set_title(f"dashed: the preset's published number ({' / '.join(sorted(units))})", fontsize=8)
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
