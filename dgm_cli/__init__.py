"""dgm: deep generative models on MNIST-sized images, as a Python library and the `dgm` command.

    import dgm_cli as dgm

    model = dgm.load("vae")                       # a pretrained model's name, a checkpoint, or a run folder
    images = model.sample(64, seed=0)             # (64, 1, 28, 28) in [0, 1]
    report = dgm.evaluate(model, samples=1000)    # what `dgm eval vae --samples 1000` computes
    print(report.to_dict()["likelihood"]["importance_weighted"]["nats"])
    scores = dgm.sample_quality(images, dataset="mnist")
    run = dgm.train("vae", zdim=2, epochs=5, data="mnist-mini", out="runs/vae-2d")

docs/python.md walks through every public name; each has a docstring with shapes, ranges and units.
"""

__version__ = "0.1.0"

# Public name -> (module, attribute). Imported on first use, so `dgm --version` and `import dgm_cli` stay fast.
_PUBLIC = {
    "list_models": ("dgm_cli.registry", "list_models"),
    "create_model": ("dgm_cli.registry", "create_model"),
    "create_config": ("dgm_cli.registry", "create_config"),
    "load": ("dgm_cli.loading", "load"),
    "list_pretrained": ("dgm_cli.zoo", "list_pretrained"),
    "load_dataset": ("dgm_cli.data", "load_dataset"),
    "Dataset": ("dgm_cli.data", "Dataset"),
    "interpolate": ("dgm_cli.interpolation", "interpolate"),
    "evaluate": ("dgm_cli.evaluation", "evaluate"),
    "EvaluationReport": ("dgm_cli.evaluation", "EvaluationReport"),
    "log_likelihood": ("dgm_cli.evaluation", "log_likelihood"),
    "sample_quality": ("dgm_cli.scoring", "sample_quality"),
    "read_images": ("dgm_cli.scoring", "read_images"),
    "train": ("dgm_cli.training", "train"),
    "Run": ("dgm_cli.training", "Run"),
    "save_image_grid": ("dgm_cli.plots", "save_image_grid"),
    "DgmError": ("dgm_cli.errors", "DgmError"),
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'dgm_cli' has no attribute {name!r}")
    import importlib

    module, attribute = _PUBLIC[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
