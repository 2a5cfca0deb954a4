"""Model names -> what it takes to build, train and load each model.

The CLI never branches on a model's name: it asks the registry. A model file
registers itself with one `register(...)` call at its bottom; adding a model is
adding one file under dgm_cli/models and importing it in models/__init__.py.
"""

from dataclasses import dataclass

from dgm_cli import config as config_tools
from dgm_cli.errors import DgmError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    config_class: type
    module_class: type
    description: str


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"model '{spec.name}' is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def _load_builtin_models() -> None:
    import dgm_cli.models  # noqa: F401  (importing registers each model)


def list_models() -> list[str]:
    _load_builtin_models()
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    _load_builtin_models()
    if name not in _REGISTRY:
        raise DgmError(f"unknown model '{name}'; known models: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def create_config(name: str, **overrides):
    return config_tools.from_dict(get_spec(name).config_class, overrides)


def create_model(name: str, **overrides):
    """timm-style: create_model('vae', zdim=2)."""
    spec = get_spec(name)
    return spec.module_class(config_tools.from_dict(spec.config_class, overrides))
