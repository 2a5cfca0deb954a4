"""Model configurations: frozen dataclasses whose fields carry their own help text and limits.

The same field metadata serves three readers: the CLI builds `dgm train MODEL`
options from it, a checkpoint's stored config is checked against it before a
model is built (so `zdim: 1000000000` in a file cannot allocate), and
`dgm info` shows it.
"""

import json
from dataclasses import MISSING, asdict, field, fields
from typing import get_type_hints

from dgm_cli.errors import DgmError


def option(default, help: str, *, min=None, max=None, choices=None, from_data=False, earlier=MISSING):
    """A config field with what the CLI and the checks need to know about it.

    from_data: set by training from the dataset (the number of classes), so `dgm train` has no option for it.
    earlier: what a checkpoint stored before the field existed was built as, when that differs from the default
    new runs get; loading such a checkpoint fills the field with it.
    """
    metadata = {"help": help, "min": min, "max": max, "choices": choices, "from_data": from_data}
    if earlier is not MISSING:
        metadata["earlier"] = earlier
    return field(default=default, metadata=metadata)


def classes_option():
    """How many classes the labels index: 10 for the digits and garments, the class folders' count for an image
    folder (training sets it from the data; a checkpoint from before it existed had 10)."""
    return option(10, "Classes of the labels (set from the data by training).", min=2, max=10_000, from_data=True)


def minutes_option():
    """A wall-clock budget instead of --epochs (budget.py): the run trains until it is spent, with its
    learning-rate schedule laid out over it; 0 = train for --epochs."""
    return option(
        0.0,
        "Train for this many minutes of wall-clock time instead of --epochs: the schedule is laid out over the "
        "budget and the run ends on time, with the configuration searched for the budget where there is one in "
        "the options not given (0 = train for --epochs).",
        min=0.0,
        max=10_080.0,
    )


def data_fields(config_class) -> set[str]:
    return {spec.name for spec in fields(config_class) if spec.metadata.get("from_data")}


def check(config) -> None:
    """Raise DgmError when a field has the wrong type or lies outside its limits."""
    hints = get_type_hints(type(config))
    for spec in fields(config):
        value, kind, meta = getattr(config, spec.name), hints[spec.name], spec.metadata
        name = spec.name
        if kind == tuple[int, ...]:
            if not isinstance(value, tuple) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise DgmError(f"config field {name} must be a list of whole numbers, got {value!r}")
            items = value
        elif kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise DgmError(f"config field {name} must be a number, got {value!r}")
            items = (value,)
        elif kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise DgmError(f"config field {name} must be a whole number, got {value!r}")
            items = (value,)
        elif kind is bool:
            if not isinstance(value, bool):
                raise DgmError(f"config field {name} must be true or false, got {value!r}")
            items = ()
        elif not isinstance(value, kind):
            raise DgmError(f"config field {name} must be a {kind.__name__}, got {value!r}")
        else:
            items = ()
        for item in items:
            if meta.get("min") is not None and item < meta["min"]:
                raise DgmError(f"config field {name} must be at least {meta['min']}, got {item}")
            if meta.get("max") is not None and item > meta["max"]:
                raise DgmError(f"config field {name} must be at most {meta['max']}, got {item}")
        if meta.get("choices") and value not in meta["choices"]:
            raise DgmError(f"config field {name} must be one of {', '.join(meta['choices'])}, got {value!r}")


def to_dict(config) -> dict:
    return asdict(config)


def to_json(config) -> str:
    return json.dumps(to_dict(config), sort_keys=True)


def from_dict(config_class, values: dict):
    """Build a config from values: unknown fields are an error, missing ones take defaults."""
    if not isinstance(values, dict):
        raise DgmError(f"a {config_class.__name__} must be a JSON object, got {type(values).__name__}")
    known = {spec.name for spec in fields(config_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise DgmError(
            f"unknown {config_class.__name__} field(s): {', '.join(unknown)}; its fields: {', '.join(sorted(known))}"
        )
    hints = get_type_hints(config_class)
    converted = {
        key: tuple(value) if hints[key] == tuple[int, ...] and isinstance(value, list) else value
        for key, value in values.items()
    }
    return config_class(**converted)


def from_stored(config_class, values: dict):
    """A config a checkpoint stored: as from_dict, except that a field the checkpoint predates takes what the
    model was built as then (its `earlier` value) instead of today's default."""
    if isinstance(values, dict):
        earlier = {spec.name: spec.metadata["earlier"] for spec in fields(config_class) if "earlier" in spec.metadata}
        values = {**{key: value for key, value in earlier.items() if key not in values}, **values}
    return from_dict(config_class, values)


def defaults(config_class) -> dict:
    return {spec.name: spec.default for spec in fields(config_class) if spec.default is not MISSING}
