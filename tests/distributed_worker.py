"""Started by tests/test_distributed.py under torchrun (2 processes, gloo on the CPU).

Trains a small model data-parallel through the ordinary trainer, then every
rank saves the parameters it ended with to OUT/rank<R>.safetensors, so the
test can compare the ranks with each other and with a one-process run.
Not collected by pytest (its name does not start with test_).

usage: distributed_worker.py MODEL OUT_DIR CONFIG_JSON TRAIN_IMAGES
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
from dgm_cli.train import RunSettings, train

sys.path.insert(0, str(Path(__file__).parent))
from distributed_data import small_dataset  # noqa: E402


def main() -> None:
    model_name, out, config_json, train_images = sys.argv[1:]
    parallel, device = distributed.start("cpu")
    models = []
    module_class = get_spec(model_name).module_class
    original = module_class.distribute

    def recording(self, wrap):  # the trainer builds the model inside; keep a handle on it
        models.append(self)
        return original(self, wrap)

    module_class.distribute = recording
    config = create_config(model_name, **json.loads(config_json))
    settings = RunSettings(
        out_dir=Path(out) / "run", seed=3, device=torch.device(device), checkpoint_dir=None, parallel=parallel
    )
    train(model_name, config, small_dataset(int(train_images)), settings, quiet_console())
    (model,) = models
    tensors = {name: value.detach().contiguous() for name, value in model.state_dict().items()}
    save_file(tensors, str(Path(out) / f"rank{os.environ['RANK']}.safetensors"))
    distributed.stop(finished=True)


if __name__ == "__main__":
    main()
