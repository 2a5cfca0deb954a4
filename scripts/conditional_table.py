"""The table of docs/conditional.md from the eval reports that scripts/conditional_runs.sh writes.

    python scripts/conditional_table.py RUNS_DIR [--models gan,vae,flow,flow-ms,flow-ms-epoch20]

RUNS_DIR holds MODEL-KIND.eval.json and the run's metrics, MODEL-KIND/metrics.jsonl (a runs folder) or
MODEL-KIND.metrics.jsonl (docs/conditional, where the reports are kept); KIND is unconditional,
conditional-prior (a flow conditioned by its class prior alone) or conditional.
For each model, the unconditional and the conditional runs side by side: FID (and the real-data floor),
conditional accuracy beside the classifier's accuracy on real test images, log p(x|y), log p(x) (for the
conditional model the class mixture), the generative classifier's accuracy, and the median seconds per
training epoch (from the runs' metrics.jsonl).
"""

import argparse
import json
import statistics
from pathlib import Path


def load(runs: Path, model: str, kind: str) -> tuple[dict, list[dict]]:
    report = json.loads((runs / f"{model}-{kind}.eval.json").read_text())
    path = runs / f"{model}-{kind}" / "metrics.jsonl"
    if not path.is_file():
        path = runs / f"{model}-{kind}.metrics.jsonl"
    metrics = [json.loads(line) for line in path.read_text().splitlines()]
    return report, metrics


def nats(summary: dict | None) -> str:
    return "" if summary is None else f"{summary['nats']:.2f} ± {summary['standard_error']:.2f}"


def row(model: str, kind: str, report: dict, metrics: list[dict]) -> list[str]:
    quality = report.get("sample_quality")
    conditional = report.get("conditional_quality")
    mixture = report.get("class_mixture")
    likelihood = report.get("likelihood", {})
    scored = likelihood.get("importance_weighted") or likelihood.get("dequantized")
    fid = "" if quality is None else f"{quality['model']['fid']:.2f} ({quality['real_floor']['fid']:.2f})"
    accuracy = "" if conditional is None else f"{conditional['accuracy']:.2%} ({conditional['real_accuracy']:.2%})"
    log_px = nats(mixture["mixture"]) if mixture else nats(scored)
    log_pxy = nats(mixture["conditional"]) if mixture else ""
    generative = f"{mixture['generative_classifier']['accuracy']:.2%}" if mixture else ""
    epochs = [record for record in metrics if record["epoch"] > 0]
    seconds = statistics.median(record["seconds"] for record in epochs) if epochs else float("nan")
    return [model, kind, str(len(epochs)), fid, accuracy, log_pxy, log_px, generative, f"{seconds:.1f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--models", default="gan,vae,flow,flow-ms,flow-ms-epoch20")
    args = parser.parse_args()
    header = [
        "model",
        "kind",
        "epochs",
        "FID (real floor)",
        "conditional accuracy (classifier on real)",
        "log p(x\\|y), nats",
        "log p(x), nats",
        "generative classifier",
        "s/epoch",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for model in args.models.split(","):
        for kind in ("unconditional", "conditional-prior", "conditional"):
            if (args.runs / f"{model}-{kind}.eval.json").is_file():
                print("| " + " | ".join(row(model, kind, *load(args.runs, model, kind))) + " |")


if __name__ == "__main__":
    main()
