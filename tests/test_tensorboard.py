"""`dgm train --tensorboard`: the events in the run folder, read back with TensorBoard's own reader."""

import builtins
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dgm_cli.cli import app

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

TINY = ["--hidden", "8", "--zdim", "2", "--dataset", "mnist-mini"]


def dgm(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def events(folder: str):
    reader = event_accumulator.EventAccumulator(folder, size_guidance={"images": 0, "scalars": 0})
    reader.Reload()
    return reader


def test_scalars_sample_grids_and_hyperparameters_are_logged_per_epoch():
    result = dgm("train", "vae", "--epochs", "2", "--sample-epochs", "0,2", "--out", "run", "--tensorboard", *TINY)
    assert result.exit_code == 0, result.output
    log = events("run")
    tags = log.Tags()
    assert {"train/elbo", "val/elbo", "test/elbo", "speed/seconds"} <= set(tags["scalars"])
    records = [__import__("json").loads(line) for line in Path("run/metrics.jsonl").read_text().splitlines()]
    val = log.Scalars("val/elbo")
    assert [event.step for event in val] == [0, 1, 2]
    assert [event.value for event in val] == pytest.approx([r["val_elbo"] for r in records], rel=1e-6)
    assert [(e.step, e.value) for e in log.Scalars("test/elbo")] == [(2, pytest.approx(records[-1]["test_elbo"]))]
    # the grids of the sample epochs, and the zdim-2 manifold
    assert {"samples", "samples/binary", "manifold"} <= set(tags["images"])
    assert [image.step for image in log.Images("samples")] == [0, 2]
    assert log.Images("manifold")[0].width > log.Images("samples")[0].width  # 20x20 digits against 8x8
    # the configuration as hyper-parameters, comparing runs by their validation metric
    plugin = log.PluginTagToContent("hparams")
    from tensorboard.plugins.hparams import plugin_data_pb2

    # the record that carries the values (the others describe the experiment and its end)
    records = [plugin_data_pb2.HParamsPluginData.FromString(content) for content in plugin.values()]
    parts = [getattr(record, record.WhichOneof("data")) for record in records]
    hparams = next(part.hparams for part in parts if hasattr(part, "hparams") and len(part.hparams))
    assert hparams["zdim"].number_value == 2 and hparams["model"].string_value == "vae"
    assert hparams["dataset"].string_value == "mnist-mini" and hparams["precision"].string_value == "fp32"


def test_a_resumed_run_continues_its_log_without_repeating_epochs():
    assert (
        dgm("train", "vae", "--epochs", "1", "--sample-epochs", "", "--out", "run", "--tensorboard", *TINY).exit_code
        == 0
    )
    result = dgm("train", "vae", "--resume", "run", "--epochs", "3")  # the run's own --tensorboard is kept
    assert result.exit_code == 0, result.output
    steps = [event.step for event in events("run").Scalars("val/elbo")]
    assert steps == [0, 1, 2, 3]


def test_without_the_package_the_error_names_it_and_nothing_is_created(monkeypatch):
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard") or name.startswith("tensorboard"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    result = dgm("train", "vae", "--epochs", "1", "--out", "run", "--tensorboard", *TINY)
    assert result.exit_code == 1
    assert 'pip install -e ".[tensorboard]"' in result.stderr and result.stderr.strip().startswith("error:")
    assert not Path("run").exists()
