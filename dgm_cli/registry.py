"""Model names -> what it takes to build, train and load each model.

The CLI never branches on a model's name: it asks the registry. A model file
registers itself with one `register(...)` call at its bottom; adding a model is
adding one file under dgm_cli/models and importing it in models/__init__.py.
"""

from dataclasses import dataclass, field

from dgm_cli import config as config_tools
from dgm_cli.errors import DgmError


@dataclass(frozen=True)
class Preset:
    """A named configuration that reproduces one published result, with that result to compare against.

    `overrides` are config fields set on top of the model's defaults (options given on the command line
    still win); `published` is the paper's number in the units of `metric`, measured as `protocol` says:
    {"estimate": a key of dgm eval's likelihood report, "dataset", "split", "samples": its k, "value":
    "nll_nats" (minus its nats) or "bits_per_dim"}.
    """

    name: str
    description: str
    overrides: dict
    published: float
    metric: str  # what `published` measures, e.g. "test NLL (nats), importance-weighted k=5000"
    reference: str  # where it is published
    protocol: dict
    departures: str = ""  # how dgm's configuration differs from the paper's, and why

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "published": self.published,
            "metric": self.metric,
            "reference": self.reference,
            "protocol": self.protocol,
            "departures": self.departures,
            "overrides": self.overrides,
        }


@dataclass(frozen=True)
class BudgetDefaults:
    """The configuration `--minutes M` trains with, for M up to `up_to` minutes, in the fields not given: the
    best on the validation split of benchmarks/budget_search.py's grid, searched at `searched_at` minutes on
    one CPU core (its record: `record`, under docs/). A field of `unless_given` given (one that picks another
    kind of model, such as the flow's --arch) leaves the whole configuration out: it was searched as a whole,
    and its other fields may not suit the model asked for."""

    up_to: float
    fields: dict
    searched_at: float
    record: str
    unless_given: tuple[str, ...] = ()

    def words(self) -> str:
        """The fields as options, e.g. "width 16, lr 0.001, batch-size 32"."""
        shown = {
            key.replace("_", "-"): f"{value:g}" if isinstance(value, float) else value
            for key, value in self.fields.items()
        }
        return ", ".join(f"{option} {value}" for option, value in shown.items())


def searched_budgets(family: str, winners: dict, unless_given: tuple[str, ...] = ()) -> tuple[BudgetDefaults, ...]:
    """A family's budget entries from its searches, `winners` {minutes searched at: the winning fields}: each
    entry covers up to twice the budget it was searched at, and its record is the search's, under docs/."""
    return tuple(
        BudgetDefaults(
            up_to=2 * searched_at,
            fields=fields,
            searched_at=searched_at,
            record=f"performance/search/{family}-{searched_at}-minutes.json",
            unless_given=unless_given,
        )
        for searched_at, fields in sorted(winners.items())
    )


@dataclass(frozen=True)
class ModelSpec:
    name: str
    config_class: type
    module_class: type
    description: str
    presets: dict[str, Preset] = field(default_factory=dict)  # name -> Preset; the config's `preset` field names one
    budget_defaults: tuple[BudgetDefaults, ...] = ()  # by increasing up_to; budgets beyond the last keep the defaults


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"model '{spec.name}' is registered twice")
    _REGISTRY[spec.name] = spec
    spec.module_class.model_name = spec.name  # what a checkpoint of it records as dgm.model
    return spec


def _load_builtin_models() -> None:
    import dgm_cli.models  # noqa: F401  (importing registers each model)


def list_models() -> list[str]:
    """The registered models' names, sorted: what create_model, dgm.load(model=) and `dgm train NAME` take."""
    _load_builtin_models()
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    _load_builtin_models()
    if name not in _REGISTRY:
        raise DgmError(f"unknown model '{name}'; known models: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def create_config(name: str, **overrides):
    """The model's config from its defaults, a preset's fields when overrides name one (preset=...), then overrides."""
    spec = get_spec(name)
    values = dict(preset_overrides(spec, overrides.get("preset")), **overrides)
    return config_tools.from_dict(spec.config_class, values)


def preset_overrides(spec: ModelSpec, preset: str | None) -> dict:
    if preset in (None, "none"):
        return {}
    if preset not in spec.presets:
        known = ", ".join(spec.presets) or "none"
        raise DgmError(f"the {spec.name} has no preset {preset!r}; its presets: {known}")
    return {**spec.presets[preset].overrides, "preset": preset}


def budget_defaults(spec: ModelSpec, minutes: float | None, given: set[str] = frozenset()) -> BudgetDefaults | None:
    """The tuned configuration a budget of `minutes` trains with, the fields `given` aside (None: no budget,
    none searched for it, or a field given that picks another kind of model)."""
    if not minutes:
        return None
    tuned = next((tuned for tuned in spec.budget_defaults if minutes <= tuned.up_to), None)
    return None if tuned is None or given & set(tuned.unless_given) else tuned


def preset_of(spec: ModelSpec, config) -> Preset | None:
    """The preset a config was built from, if any."""
    return spec.presets.get(getattr(config, "preset", "none"))


def create_model(name: str, **overrides):
    """A new, untrained model (an nn.Module in train mode on the CPU), timm-style: create_model("vae", zdim=2).

    overrides: config fields (`dgm models --json` lists each model's, with defaults); preset="NAME" applies a
    published configuration first. An unknown name fails with the known ones, an unknown field with the known
    fields, a value outside a field's limits with the limits."""
    return get_spec(name).module_class(create_config(name, **overrides))
