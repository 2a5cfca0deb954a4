"""The generic training loop: schedules reach the optimizer, and the run records test metrics."""

import json

import torch
from typer.testing import CliRunner

from dgm_cli.checkpoint import load_checkpoint
from dgm_cli.cli import app
from dgm_cli.models.vae import VAE


def test_the_learning_rate_factor_reaches_the_optimizer(monkeypatch):
    seen = []

    def frozen(self, progress):
        seen.append(progress)
        return 0.0  # Adam with a learning rate of 0 leaves every weight where it started

    monkeypatch.setattr(VAE, "learning_rate_factor", frozen)
    result = CliRunner().invoke(app, ["train", "vae", "--epochs", "2", "--hidden", "8", "--dataset", "mnist-mini",
                                      "--batch-size", "1000", "--out", "frozen", "--sample-epochs", "", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert seen == [step / 10 for step in range(10)]  # 5 steps per epoch, 2 epochs
    trained, _ = load_checkpoint("frozen/last.safetensors")
    torch.manual_seed(3)
    untouched = VAE(trained.config)
    for (name, a), b in zip(trained.state_dict().items(), untouched.state_dict().values()):
        assert torch.equal(a, b), name


def test_the_final_record_holds_test_metrics_that_chose_nothing():
    result = CliRunner().invoke(app, ["train", "vae", "--epochs", "1", "--hidden", "8", "--dataset", "mnist-mini",
                                      "--out", "t", "--sample-epochs", ""])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in open("t/metrics.jsonl")]
    assert "test_elbo" in records[-1] and all("test_elbo" not in r for r in records[:-1])
    metadata = json.loads(CliRunner().invoke(app, ["info", "t/last.safetensors", "--json"]).stdout)
    assert metadata["train"]["metrics"]["test_elbo"] == records[-1]["test_elbo"]
