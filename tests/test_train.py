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
    result = CliRunner().invoke(
        app,
        [
            "train",
            "vae",
            "--epochs",
            "2",
            "--hidden",
            "8",
            "--dataset",
            "mnist-mini",
            "--batch-size",
            "1000",
            "--out",
            "frozen",
            "--sample-epochs",
            "",
            "--seed",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    assert seen == [step / 10 for step in range(10)]  # 5 steps per epoch, 2 epochs
    trained, _ = load_checkpoint("frozen/last.safetensors")
    torch.manual_seed(3)
    untouched = VAE(trained.config)
    for (name, a), b in zip(trained.state_dict().items(), untouched.state_dict().values()):
        assert torch.equal(a, b), name


def test_the_final_record_holds_test_metrics_that_chose_nothing():
    result = CliRunner().invoke(
        app,
        [
            "train",
            "vae",
            "--epochs",
            "1",
            "--hidden",
            "8",
            "--dataset",
            "mnist-mini",
            "--out",
            "t",
            "--sample-epochs",
            "",
        ],
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in open("t/metrics.jsonl")]
    assert "test_elbo" in records[-1] and all("test_elbo" not in r for r in records[:-1])
    metadata = json.loads(CliRunner().invoke(app, ["info", "t/last.safetensors", "--json"]).stdout)
    assert metadata["train"]["metrics"]["test_elbo"] == records[-1]["test_elbo"]


def test_the_loop_reads_top_to_bottom_and_shares_state_through_fields_not_closures():
    """The shape the trainer keeps (issue 14): one loop function a reader follows from top to bottom, the
    state it shares with its helpers held as an object's fields, and run-folder logic out of the CLI."""
    import ast
    import inspect

    import dgm_cli.cli as cli
    import dgm_cli.trainer as trainer

    loop_lines = inspect.getsource(trainer.loop).splitlines()
    assert len(loop_lines) < 100
    tree = ast.parse(inspect.getsource(trainer))
    assert not [node for node in ast.walk(tree) if isinstance(node, ast.Nonlocal)]
    nested = [
        inner.name
        for outer in ast.walk(tree)
        if isinstance(outer, ast.FunctionDef)
        for inner in ast.walk(outer)
        if isinstance(inner, ast.FunctionDef) and inner is not outer
    ]
    assert nested == []
    cli_source = inspect.getsource(cli)
    for run_folder_logic in ("load_state", "STATE_FILE", "config.json", "refuse_existing_run", "glob("):
        assert run_folder_logic not in cli_source, run_folder_logic
