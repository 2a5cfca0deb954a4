"""Plain-text listings for a terminal and a pipe: presets, runs, models, a checkpoint's facts.

Columns are padded with spaces, never drawn, and lines are never wrapped, so `dgm models | grep vae` and
`dgm runs | sort` see whole rows.
"""

import json

from dgm_cli import config as config_tools
from dgm_cli.registry import get_spec, list_models


def as_option(field: tuple) -> str:
    """A config field and its value as the option that sets it: --batch-size 20, --no-flag, --sample-epochs 0,10."""
    name, value = field
    flag = name.replace("_", "-")
    if isinstance(value, bool):
        return f"--{flag}" if value else f"--no-{flag}"
    if isinstance(value, (tuple, list)):
        value = ",".join(str(part) for part in value)
    return f"--{flag} {value}"


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """Plain columns, two spaces apart, that survive a pipe (grep, sort, less) where a drawn table would not."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]
    )


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def presets_text(rows: list[dict]) -> str:
    """dgm presets: a row per preset and variant, then where each published number comes from."""
    from dgm_cli.reports import published_digits

    def number(value, row):
        return "-" if value is None else f"{value:.{published_digits(row['metric'])}f}"

    def configuration(row):
        changed = " ".join(map(as_option, row["changes"].items()))
        if row.get("pretrained"):
            return (
                f"pretrained {row['pretrained']}: " + row["description"] + (f"; trained: {changed}" if changed else "")
            )
        if row["variant"] is None:  # the preset's own checkpoint, trained otherwise than the preset now is, says how
            return row["description"] + (f"; this checkpoint: {changed}" if changed else "")
        return f"variant {row['variant']}: " + (changed or "the preset's configuration")

    table = [
        [
            row["model"],
            row["name"],
            number(row["published"], row),
            number(row["dgm"], row),
            "-" if row["dgm"] is None else f"± {number(row['dgm_standard_error'], row)}",
            configuration(row),
        ]
        for row in rows
    ]
    sources = sorted({f"published: {row['metric']}; {row['reference']}" for row in rows})
    return "\n".join([format_table(["model", "preset", "published", "dgm", "s.e.", "configuration"], table), *sources])


def runs_text(summaries) -> str:
    """dgm runs: a row per run folder."""
    number = lambda value: "-" if value is None else f"{value:.4f}"  # noqa: E731
    rows = [
        [
            s.model,
            s.dataset,
            f"{s.epochs_done}/{s.epochs_planned if s.epochs_planned is not None else '?'}",
            f"{s.status} {s.detail}",
            (s.metric or "-").removeprefix("val_"),
            number(s.best),
            number(s.last),
            duration(s.train_seconds),
            "-" if s.wall_seconds is None else duration(s.wall_seconds),
            s.path,
        ]
        for s in summaries
    ]
    header = ["model", "data", "epochs", "status", "metric", "best val", "last val", "train time", "wall", "folder"]
    return format_table(header, rows)


def model_entries() -> list[dict]:
    """Each registered model: name, description, capabilities and the config's defaults."""
    return [
        {
            "name": name,
            "description": get_spec(name).description,
            "capabilities": sorted(get_spec(name).module_class.capabilities),
            "config": config_tools.defaults(get_spec(name).config_class),
        }
        for name in list_models()
    ]


def models_text(entries: list[dict]) -> str:
    return format_table(
        ["model", "what it is", "capabilities"],
        [[entry["name"], entry["description"], ", ".join(entry["capabilities"])] for entry in entries],
    )


def size(count: int) -> str:
    return f"{count / 1e6:.1f} MB"


def pretrained_text(entries: list[dict]) -> str:
    """dgm models --pretrained: a block per model (name, family, size; what it is; its headline number; how it
    was made), each line whole, so grep -A3 NAME finds one."""
    blocks = []
    for entry in entries:
        also = f"; also named {', '.join(entry['aliases'])}" if entry["aliases"] else ""
        number = entry["headline"]
        digits = 4 if number["unit"] == "bits/dim" else 2  # bits/dim are 543 times smaller than nats an image
        error = "" if number["standard_error"] is None else f" ± {number['standard_error']:.{digits}f}"
        blocks.append(
            "\n".join(
                [
                    f"{entry['name']}  ({entry['family']}{also}; {size(entry['bytes'])})",
                    f"  {entry['description']}",
                    f"  {number['value']:.{digits}f}{error} {number['unit']}".rstrip() + f": {number['what']}",
                    f"  made by: {entry['made_by']}",
                ]
            )
        )
    return "\n".join(blocks)


def checkpoint_text(details: dict) -> str:
    """dgm info: the header line, then the config, data and training facts as JSON lines."""
    only = " (inference-only: no training state)" if details.get("inference_only") else ""
    lines = [
        f"{details['path']}: {details['model']} model{only}, {details['parameters']:,} parameters, dgm {details['version']}"
    ]
    return "\n".join(
        lines + [f"{key}: {json.dumps(details[key], sort_keys=True)}" for key in ("config", "data", "train")]
    )
