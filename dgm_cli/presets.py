"""Presets beside their published numbers: what `dgm presets` lists and what `dgm eval` prints.

A preset (registry.Preset) names a published configuration and its number.
dgm's own number for it comes from files, never from this code: the
evaluation report `dgm eval MODEL CKPT --result CKPT.eval.json` wrote beside
the preset's checkpoint, `checkpoints/MODEL-PRESET.safetensors`.
"""

import json
from pathlib import Path

from dgm_cli.registry import get_spec


def preset_checkpoint(model_name: str, preset_name: str, folder: Path) -> Path:
    return Path(folder) / f"{model_name}-{preset_name}.safetensors"


def measured_value(report: dict, protocol: dict) -> tuple[float, float] | None:
    """(value, standard error) of an evaluation report in the protocol's units, or None when it has none."""
    estimate = report.get("likelihood", {}).get(protocol["estimate"])
    if estimate is None:
        return None
    if protocol["value"] == "nll_nats":
        return -estimate["nats"], estimate["standard_error"]
    return estimate["bits_per_dim"], estimate["bits_per_dim_standard_error"]


def protocol_differences(report: dict, protocol: dict, split_size: int) -> list[str]:
    """How an evaluation report departs from the published protocol, in words; empty when it follows it."""
    estimate = report.get("likelihood", {}).get(protocol["estimate"], {})
    differences = []
    if report.get("dataset") != protocol["dataset"]:
        differences.append(f"{report.get('dataset')} instead of {protocol['dataset']}")
    if report.get("split") != protocol["split"]:
        differences.append(f"the {report.get('split')} split instead of {protocol['split']}")
    if estimate.get("samples") != protocol["samples"]:
        differences.append(f"k={estimate.get('samples')} instead of {protocol['samples']}")
    if report.get("likelihood", {}).get("images") != split_size:
        differences.append(f"{report.get('likelihood', {}).get('images')} of the split's {split_size} images")
    return differences


def comparison(spec, info, report: dict, *, split_size: int) -> dict | None:
    """The published number of the checkpoint's preset beside this evaluation's (None without a preset)."""
    preset = spec.presets.get(getattr(info.config, "preset", "none"))
    if preset is None:
        return None
    value = measured_value(report, preset.protocol)
    return {
        "preset": preset.name,
        "published": preset.published,
        "metric": preset.metric,
        "reference": preset.reference,
        "dgm": None if value is None else value[0],
        "dgm_standard_error": None if value is None else value[1],
        "differences": protocol_differences(report, preset.protocol, split_size) if value is not None else ["no estimate"],
    }


def preset_table(models: list[str], checkpoint_dir: Path) -> list[dict]:
    rows = []
    for model_name in models:
        for preset in get_spec(model_name).presets.values():
            checkpoint = preset_checkpoint(model_name, preset.name, checkpoint_dir)
            result = checkpoint.with_suffix(".eval.json")
            value = None
            if result.is_file():
                try:
                    report = json.loads(result.read_text())
                    if not protocol_differences(report, preset.protocol, report["likelihood"]["images"]):
                        value = measured_value(report, preset.protocol)
                except (OSError, ValueError, KeyError, TypeError):
                    value = None  # a damaged or foreign file: no measured number rather than a wrong one
            rows.append({
                "model": model_name, **preset.as_dict(),
                "checkpoint": str(checkpoint) if checkpoint.is_file() else None,
                "dgm": None if value is None else value[0],
                "dgm_standard_error": None if value is None else value[1],
            })  # fmt: skip
    return rows
