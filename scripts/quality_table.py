"""A markdown table of sample quality (and likelihood) from dgm eval reports, with the real-data floor first.

    python scripts/quality_table.py REPORT.eval.json [REPORT.eval.json ...]

Each report is what `dgm eval ... --result FILE` writes. The first report's real floor (held-out real images,
as many as the samples) opens the table; every report adds its model's row: epochs (from the run's
metrics.jsonl beside the checkpoint, when there is one), FID, KID ± its spread over subsets, precision, recall,
Inception Score, class entropy, classes with >= 5% of the samples, the likelihood the report has (nats and
bits/dim), and the feature network that measured them. scripts/fashion_runs.sh makes such reports.
"""

import argparse
import json
from pathlib import Path


def quality_cells(numbers: dict) -> list[str]:
    return [
        f"{numbers['fid']:.1f}",
        f"{numbers['kid']:.2f} ± {numbers['kid_std']:.2f}",
        f"{numbers['precision']:.3f}",
        f"{numbers['recall']:.3f}",
        f"{numbers['inception_score']:.2f}",
        f"{numbers['entropy_bits']:.2f}",
        str(numbers["classes_at_5_percent"]),
    ]


def likelihood_cell(report: dict) -> str:
    likelihood = report.get("likelihood") or {}
    for name in ("importance_weighted", "variational_bound", "dequantized"):
        if name in likelihood:
            summary = likelihood[name]
            return f"{summary['nats']:.2f} nats, {summary['bits_per_dim']:.4f} bits/dim ({name.replace('_', ' ')})"
    return ""


def epochs_of(report: dict) -> str:
    if "epochs" in report:  # a dgm reproduce result
        return str(report["epochs"])
    metrics = Path(report.get("checkpoint") or ".").parent / "metrics.jsonl"
    if not metrics.is_file():
        return ""
    return str(json.loads(metrics.read_text().splitlines()[-1])["epoch"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("reports", nargs="+", type=Path)
    args = parser.parse_args()
    reports = [json.loads(path.read_text()) for path in args.reports]
    first = reports[0]["sample_quality"]
    print(
        f"{first['samples']:,} samples against {first['reference_images']:,} {reports[0]['dataset']} "
        f"{reports[0]['split']} images; feature network {reports[0]['feature_network']['checkpoint']} "
        f"(trained on {reports[0]['feature_network']['data']})\n"
    )
    print(
        "| images | epochs | FID | KID (± std over subsets) | precision | recall | Inception Score | class entropy [bits] | "
        "classes >= 5% | test log p(x) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print("| **real floor** (validation split) | | " + " | ".join(quality_cells(first["real_floor"])) + " | |")
    for report in reports:
        weights = report["sample_quality"].get("weights", "")
        name = f"{report['model']}" + (f" ({weights} weights)" if weights == "moving average" else "")
        print(
            f"| {name} | {epochs_of(report)} | "
            + " | ".join(quality_cells(report["sample_quality"]["model"]))
            + f" | {likelihood_cell(report)} |"
        )


if __name__ == "__main__":
    main()
