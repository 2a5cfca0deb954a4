"""Presets beside their published numbers: what `dgm presets` lists and what `dgm eval` prints.

A preset (registry.Preset) names a published configuration and its number.
dgm's own number for it comes from files, never from this code: the
evaluation report `dgm eval MODEL CKPT --result CKPT.eval.json` wrote beside
the preset's checkpoint: the zoo's pretrained MODEL-PRESET, and your own
`checkpoints/MODEL-PRESET.safetensors`. A variant,
`checkpoints/MODEL-PRESET-WORD.safetensors` trained from the preset with some
options changed (the paper's batch size, another activation), is listed
under it with those changes, read from its own header.
"""

import json
from pathlib import Path

from dgm_cli import config as config_tools
from dgm_cli.data import default_val_size
from dgm_cli.errors import DgmError
from dgm_cli.registry import get_spec, preset_overrides

# Fields that do not change what a run computes: left out of a variant's changes.
UNCOMPUTED_FIELDS = {"preset", "sample_epochs"}


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


def comparison(spec, config, report: dict, *, split_size: int) -> dict | None:
    """The published number of the preset a model's `config` was built from beside this evaluation's (None
    without a preset)."""
    preset = spec.presets.get(getattr(config, "preset", "none"))
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
        "differences": protocol_differences(report, preset.protocol, split_size)
        if value is not None
        else ["no estimate"],
    }


def protocol_value(checkpoint: Path, protocol: dict) -> tuple[float, float] | None:
    """dgm's number from the checkpoint's CKPT.eval.json when that report followed the published protocol."""
    result = checkpoint.with_suffix(".eval.json")
    if not result.is_file():
        return None
    try:
        report = json.loads(result.read_text())
        if not protocol_differences(report, protocol, report["likelihood"]["images"]):
            return measured_value(report, protocol)
    except (OSError, ValueError, KeyError, TypeError):
        pass  # a damaged or foreign file: no measured number rather than a wrong one
    return None


def variant_changes(spec, info) -> dict:
    """The fields a checkpoint's config sets otherwise than its preset does (left out: UNCOMPUTED_FIELDS, the
    fields the data set, and those the checkpoint's configuration does not use), first the checkpoint it was
    trained on from, if any, and last the held-out size when not dgm's split."""
    from dataclasses import fields

    mine = config_tools.to_dict(info.config)
    preset = config_tools.to_dict(config_tools.from_dict(spec.config_class, preset_overrides(spec, mine.get("preset"))))
    from_data = {field.name for field in fields(spec.config_class) if field.metadata.get("from_data")}
    unused = set(info.config.inapplicable_fields()) if hasattr(info.config, "inapplicable_fields") else set()
    changes = {
        name: value
        for name, value in mine.items()
        if name not in UNCOMPUTED_FIELDS | from_data | unused and preset.get(name) != value
    }
    started = info.train.get("init_from")
    if started:  # trained on from another checkpoint (dgm train --init-from): its epochs come on top of that one's
        changes = {"init_from": f"{Path(started['path']).name} (epoch {started.get('epoch')})", **changes}
    held_out, trained = info.data.get("val"), info.data.get("train")
    if (
        info.data.get("kind") != "image-folder"
        and held_out
        and trained
        and held_out != default_val_size(held_out + trained)
    ):
        changes["val_size"] = held_out  # not dgm's split of the training file (dgm train --val-size)
    return changes


def checkpoint_changes(spec, preset_name: str, path: Path) -> dict | None:
    """The options a checkpoint of the preset changed (variant_changes), or None when `path` is not a readable
    dgm checkpoint that names the preset."""
    from dgm_cli.checkpoint import read_header

    try:
        info = read_header(path, expected_model=spec.name)
    except DgmError:
        return None
    return variant_changes(spec, info) if getattr(info.config, "preset", None) == preset_name else None


def preset_variants(spec, preset_name: str, folder: Path) -> list[tuple[Path, dict]]:
    """MODEL-PRESET-WORD.safetensors files in `folder` whose header names the preset, with their changes;
    files that are not readable dgm checkpoints of it are passed over."""
    paths = sorted(Path(folder).glob(f"{spec.name}-{preset_name}-*.safetensors"))
    return [(path, changes) for path in paths if (changes := checkpoint_changes(spec, preset_name, path)) is not None]


def preset_row(model_name: str, preset, path: Path, changes: dict, *, variant=None, pretrained=None) -> dict:
    value = protocol_value(path, preset.protocol)
    return {
        "model": model_name,
        **preset.as_dict(),
        "variant": variant,
        "pretrained": pretrained,
        "changes": changes,
        "checkpoint": str(path) if path.is_file() else None,
        "dgm": None if value is None else value[0],
        "dgm_standard_error": None if value is None else value[1],
    }


def preset_rows(spec, preset, checkpoint_dir: Path) -> list[dict]:
    """The pretrained model of the preset (MODEL-PRESET in the zoo), your own checkpoint of it in
    checkpoint_dir (MODEL-PRESET.safetensors; a row without a number when there is neither), then your variants."""
    from dgm_cli.zoo import find

    rows = []
    pretrained = find(f"{spec.name}-{preset.name}")
    if pretrained is not None:
        changes = checkpoint_changes(spec, preset.name, pretrained.path) or {}
        rows.append(preset_row(spec.name, preset, pretrained.path, changes, pretrained=pretrained.name))
    own = preset_checkpoint(spec.name, preset.name, checkpoint_dir)
    if own.is_file() or pretrained is None:
        # The preset's own checkpoint may predate a change of the preset (e.g. its initialisation): say so.
        rows.append(preset_row(spec.name, preset, own, checkpoint_changes(spec, preset.name, own) or {}))
    for path, changes in preset_variants(spec, preset.name, checkpoint_dir):
        rows.append(
            preset_row(spec.name, preset, path, changes, variant=path.stem[len(f"{spec.name}-{preset.name}-") :])
        )
    return rows


def preset_table(models: list[str], checkpoint_dir: Path) -> list[dict]:
    """One row per preset: its pretrained model and your own checkpoints of it (preset_rows)."""
    return [
        row
        for model_name in models
        for preset in get_spec(model_name).presets.values()
        for row in preset_rows(get_spec(model_name), preset, checkpoint_dir)
    ]
