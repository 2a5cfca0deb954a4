"""Started by tests/test_distributed.py under torchrun (2 processes, gloo on the CPU).

Trains small models data-parallel through the ordinary trainer, one after another in one launch (each
torchrun launch costs seconds of process start-up, more than these trainings), then every rank saves
the parameters each model ended with to OUT/CASE/rank<R>.safetensors, so the test can compare the ranks
with each other and with a one-process run.
Not collected by pytest (its name does not start with test_).

usage: distributed_worker.py OUT_DIR CASES_JSON TRAIN_IMAGES
CASES_JSON: {"case name": ["model", {config fields}], ...}; each case trains into OUT/CASE/run.
"""

import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from dgm_cli import distributed
from dgm_cli.progress import quiet_console
from dgm_cli.registry import create_config, get_spec
from dgm_cli.trainer import RunSettings, train

sys.path.insert(0, str(Path(__file__).parent))
from distributed_data import small_dataset  # noqa: E402


def train_case(model_name: str, fields: dict, out: Path, dataset, parallel, device: str) -> None:
    models = []
    module_class = get_spec(model_name).module_class
    original = module_class.distribute

    def recording(self, wrap):  # the trainer builds the model inside; keep a handle on it
        models.append(self)
        return original(self, wrap)

    module_class.distribute = recording
    try:
        settings = RunSettings(
            out_dir=out / "run", seed=3, device=torch.device(device), checkpoint_dir=None, parallel=parallel
        )
        train(model_name, create_config(model_name, **fields), dataset, settings, quiet_console())
    finally:
        module_class.distribute = original
    (model,) = models
    tensors = {name: value.detach().contiguous() for name, value in model.state_dict().items()}
    save_file(tensors, str(out / f"rank{os.environ['RANK']}.safetensors"))


def main() -> None:
    out, cases_json, train_images = sys.argv[1:]
    parallel, device = distributed.start("cpu")
    dataset = small_dataset(int(train_images))
    for case, (model_name, fields) in json.loads(cases_json).items():
        train_case(model_name, fields, Path(out) / case, dataset, parallel, device)
    distributed.stop(finished=True)


if __name__ == "__main__":
    main()
