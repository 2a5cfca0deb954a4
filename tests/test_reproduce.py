"""dgm reproduce: every experiment trained, evaluated and reported, and a second invocation resumes."""

import json
import os
import signal

import pytest
from rich.console import Console

import dgm_cli.reproduce as reproduce_module
from dgm_cli.data import Dataset, Split, load_dataset
from dgm_cli.errors import Interrupted
from dgm_cli.registry import get_spec
from dgm_cli.reproduce import EXPERIMENTS, Budget, reproduce

TINY = Budget(epochs={"vae": 1, "gan": 1, "flow": 1}, iw_samples=5, samples=100, interpolation_draws=2000)


@pytest.fixture
def tiny_data():
    mini = load_dataset("mnist-mini", None)
    cut = lambda split, n: Split(split.images[:n], split.labels[:n])  # noqa: E731
    return Dataset("mnist-mini", cut(mini.train, 640), cut(mini.val, 200), cut(mini.test, 200), mini.location)


def quiet():
    return Console(file=open(os.devnull, "w"))


def test_reproduce_writes_a_report_from_the_runs_and_resumes_after_an_interruption(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce_module, "QUICK", TINY)
    flow = get_spec("flow").module_class
    original, calls = flow.training_step, {"n": 0}

    def interrupting(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the seed's flow, second step: as if Ctrl-C came then
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(flow, "training_step", interrupting)
        with pytest.raises(Interrupted, match="run the same dgm reproduce command again to continue"):
            reproduce(tmp_path, tiny_data, quick=True, device="cpu", console=quiet())
    done = sorted(path.stem for path in (tmp_path / "results").glob("*.json"))
    assert done == ["gan", "vae-zdim2", "vae-zdim20"]  # the steps before the interruption are kept

    before = (tmp_path / "results" / "vae-zdim20.json").read_text()
    summary = reproduce(tmp_path, tiny_data, quick=True, device="cpu", console=quiet())
    assert (tmp_path / "results" / "vae-zdim20.json").read_text() == before  # not redone
    assert set(summary["results"]) == {experiment.name for experiment in EXPERIMENTS}
    flow_run = [json.loads(line) for line in (tmp_path / "runs" / "flow" / "metrics.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in flow_run] == [0, 1]  # resumed mid-epoch, finished once

    report = (tmp_path / "README.md").read_text()
    for experiment in EXPERIMENTS:
        result = summary["results"][experiment.name]
        assert f"| {experiment.title} | 1 |" in report
        assert f"{result['sample_quality']['model']['fid']:.1f}" in report
    assert f"{summary['results']['flow']['likelihood']['dequantized']['bits_per_dim']:.4f}" in report
    assert "Quick mode" in report
    for link in [line.split("](")[1].split(")")[0] for line in report.splitlines() if "](figures/" in line]:
        assert (tmp_path / link).is_file(), link
    assert "## Conclusion" in report and "Ranked by FID" in report


def test_the_command_refuses_an_output_that_is_a_file(tmp_path):
    from typer.testing import CliRunner

    from dgm_cli.cli import app

    (tmp_path / "taken").write_text("not a folder")
    result = CliRunner().invoke(app, ["reproduce", "--quick", "--out", str(tmp_path / "taken")])
    assert result.exit_code == 1 and "cannot write to" in result.stderr and "Traceback" not in result.output
