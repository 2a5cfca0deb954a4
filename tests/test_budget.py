"""Training for a wall-clock budget (--minutes): every family ends on time, lays its schedule over the budget,
validates on a recorded subset, and resumes with the time it had left."""

import json
import os
import signal

import pytest
import torch
from conftest import invoke_dgm
from rich.console import Console

from dgm_cli import budget as budget_module
from dgm_cli.budget import Budget, held_out_size, seeded_subset
from dgm_cli.data import load_dataset
from dgm_cli.errors import Interrupted
from dgm_cli.models.base import ema_decay
from dgm_cli.registry import create_config, get_spec
from dgm_cli.state import load_state
from dgm_cli.trainer import RunSettings, train

SECONDS = 3.0  # each family's budget here: long enough for a few epochs of mnist-mini, short for the suite
SMALL = {
    "vae": {"hidden": 32, "zdim": 4},
    "gan": {"latent_dim": 8, "ema": 0.9},
    "flow": {"hidden": 16, "couplings": 2},
    "diffusion": {"width": 8, "timesteps": 20, "sample_steps": 5},
    "classifier": {},
}


@pytest.fixture(scope="module")
def mini():
    return load_dataset("mnist-mini", None)


def quiet() -> Console:
    return Console(file=open(os.devnull, "w"), force_terminal=False)


def settings(folder, **changes) -> RunSettings:
    return RunSettings(out_dir=folder, seed=3, device=torch.device("cpu"), checkpoint_dir=None, **changes)


def budgeted(model_name: str, seconds: float = SECONDS, **fields):
    return create_config(model_name, **SMALL[model_name], batch_size=128, minutes=seconds / 60, **fields)


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_the_budget_clock_lays_progress_over_the_time_left_for_steps(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(budget_module.time, "perf_counter", clock)
    budget = Budget(60.0, spent_before=10.0, started=clock.now)
    budget.plan_end(record_seconds=4.0, validation_seconds=2.0, test_share=0.5)
    assert budget.end_seconds == pytest.approx(1.25 * 5.0 + 1.0)
    assert budget.steps_from == 10.0 and budget.progress() == 0.0  # the schedule starts at the first step
    clock.now += 20.0
    assert budget.progress() == pytest.approx(20.0 / (60 - 7.25 - 10.0))
    clock.now += 60 - 7.25 - 10.0 - 20.0 - 0.5
    assert not budget.steps_over() and budget.progress() < 1
    clock.now += 1.0
    assert budget.steps_over() and budget.progress() == 1.0
    assert budget.validation_due()  # a tenth of the budget (6 s) since the last validation, at 0 s


def test_held_out_sizes_follow_the_budget_and_the_subset_is_seeded():
    assert held_out_size(10_000, 1e-3, 60.0) == 600  # 1% of a minute at 1 ms an image
    assert held_out_size(10_000, 1e-3, 3600.0) == 10_000  # the whole split when it is affordable
    assert held_out_size(10_000, 1.0, 60.0) == 500  # never fewer than 500
    assert held_out_size(300, 1.0, 60.0) == 300
    images, labels = torch.arange(1000), torch.arange(1000) % 10
    first, first_labels = seeded_subset(images, labels, 100, seed=3)
    again, _ = seeded_subset(images, labels, 100, seed=3)
    assert torch.equal(first, again) and len(set(first.tolist())) == 100
    assert torch.equal(first_labels, first % 10) and torch.equal(first, first.sort().values)
    assert seeded_subset(images, labels, 1000, seed=3)[0] is images


def test_the_weight_average_horizon_is_within_a_tenth_of_the_steps_taken():
    """Why a budget needs no EMA setting of its own: the warm-up caps the average's horizon 1 / (1 - decay)
    at (10 + t) / 9 steps after t steps, whatever --ema says."""
    for steps in (1, 10, 100, 1_000, 100_000):
        for ema in (0.9, 0.999, 0.99999):
            assert 1 / (1 - ema_decay(ema, steps)) <= (10 + steps + 1) / 9 + 1e-9


@pytest.mark.parametrize("model_name", ["vae", "gan", "flow", "diffusion", "classifier"])
def test_every_family_ends_on_time_with_its_records_and_checkpoints(model_name, mini, tmp_path):
    history = train(model_name, budgeted(model_name), mini, settings(tmp_path / "run"), quiet())
    state = load_state(tmp_path / "run" / "state.safetensors")
    assert state.finished and state.step > 0
    plan = history[0]["budget"]
    # On time: the steps run until the time kept for the end (planned on epoch 0's record, whose cold figures
    # and saves can make it generous at a 3-second budget), and the run's clock (validations, figures, saves and the test
    # included) is never more than a second and a half past the budget; or, where the end measured on a busy
    # machine does not fit in the budget at all, past epoch 0 and that end (the run then takes a single step).
    deadline = max(SECONDS, plan["steps_from"] + plan["end_seconds"])
    assert SECONDS - plan["end_seconds"] <= state.wall_seconds <= deadline + 1.5, (state.wall_seconds, plan)
    assert plan["minutes"] == pytest.approx(SECONDS / 60) and plan["end_seconds"] > 0
    # What 1% of the budget affords, in hundreds, between 500 and the whole split; the test takes as many.
    assert 500 <= plan["validation_images"] <= len(mini.val) and plan["validation_images"] % 100 == 0
    assert plan["test_images"] == min(plan["validation_images"], len(mini.test))
    assert any(key.startswith("test_") for key in history[-1]) and any(key.startswith("val_") for key in history[-1])
    elapsed = [record["elapsed"] for record in history[1:]]
    assert elapsed == sorted(elapsed) and elapsed[-1] <= deadline
    assert (tmp_path / "run" / "last.safetensors").is_file()
    written = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert written == json.loads(json.dumps(history))


def test_the_schedule_runs_from_start_to_end_over_the_budget(mini, tmp_path, monkeypatch):
    seen = []
    module_class = get_spec("vae").module_class
    monkeypatch.setattr(module_class, "learning_rate_factor", lambda self, progress: seen.append(progress) or 1.0)
    train("vae", budgeted("vae"), mini, settings(tmp_path / "run"), quiet())
    assert seen[0] < 0.05 and seen[-1] > 0.9 and seen == sorted(seen)


def test_an_interrupted_budgeted_run_resumes_with_the_time_it_had_left(mini, tmp_path, monkeypatch):
    module_class = get_spec("vae").module_class
    original, calls = module_class.training_step, {"n": 0}

    def interrupting_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 30:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(module_class, "training_step", interrupting_step)
    folder = tmp_path / "run"
    with pytest.raises(Interrupted):
        train("vae", budgeted("vae"), mini, settings(folder), quiet())
    stopped = load_state(folder / "state.safetensors")
    assert 0 < stopped.wall_seconds < SECONDS and not stopped.finished
    monkeypatch.setattr(module_class, "training_step", original)
    progress = []
    factor = module_class.learning_rate_factor
    monkeypatch.setattr(module_class, "learning_rate_factor", lambda self, p: progress.append(p) or factor(self, p))
    history = train("vae", stopped.config, mini, settings(folder), quiet(), resume=stopped)
    state = load_state(folder / "state.safetensors")
    # The schedule goes on from where it stopped (its share of the steps' time, from the first step to the
    # steps' deadline, as epoch 0's record planned them), and the two processes together keep to the budget.
    plan = stopped.history[0]["budget"]
    stopped_at = (stopped.wall_seconds - plan["steps_from"]) / (SECONDS - plan["end_seconds"] - plan["steps_from"])
    assert 0 < stopped_at <= progress[0] + 0.01  # the plan's seconds are recorded to the millisecond
    assert SECONDS - 1.5 <= state.wall_seconds <= SECONDS + 1.5
    assert history[0]["budget"] == stopped.history[0]["budget"] and state.finished


def test_the_command_line_refuses_epochs_beside_minutes_and_explains_a_spent_budget(tmp_path, mini):
    result = invoke_dgm("train", "vae", "--epochs", "3", "--minutes", "1", "--dataset", "mnist-mini")
    assert result.exit_code != 0 and "--epochs and --minutes both say how long to train; give one" in result.output
    folder = tmp_path / "run"
    train("vae", budgeted("vae", seconds=2.0), mini, settings(folder), quiet())
    again = invoke_dgm("train", "vae", "--resume", folder)
    assert again.exit_code != 0 and "has spent its budget of" in again.output and "--init-from" in again.output
    extended = invoke_dgm("train", "vae", "--resume", folder, "--epochs", "9")
    assert extended.exit_code != 0 and "leave out --epochs" in extended.output
    # Its weights start a new run, of epochs or of another budget: the budget is not inherited.
    import dgm_cli as dgm

    again = dgm.train("vae", data="mnist-mini", init_from=folder / "last.safetensors", epochs=1, out=tmp_path / "more")
    assert again.status == "finished" and [record["epoch"] for record in again.records] == [0, 1]


# ---------------------------------------------------------------- dgm eval --minutes


def test_a_budget_sizes_what_was_not_given_from_measured_costs():
    from dgm_cli.evaluation_budget import Costs, fit_budget

    costs = Costs(per_image=0.01, per_sample=0.002)
    # All 10,000 samples need 20 s, less than half of 60 s: they get it, and the other 40 s buy 4,000 images.
    assert fit_budget(costs, 60.0, 10_000, limit=None, samples=None) == (4000, 10_000)
    # The same when the 10,000 samples were asked for: their time is taken first.
    assert fit_budget(costs, 60.0, 10_000, limit=None, samples=10_000) == (4000, 10_000)
    # Both parts more than half: half each (30 s: 3,000 images, and 6,000 samples at 0.005 s).
    assert fit_budget(Costs(0.01, 0.005), 60.0, 10_000, limit=None, samples=None) == (3000, 6000)
    # The whole split in less than half: all of it (no limit), the rest to the samples, with the reference
    # embedding paid first: (60 - 5 - 10) s at 0.01 s buys 4,500.
    assert fit_budget(Costs(0.0005, 0.01, fixed=10.0), 60.0, 10_000, limit=None, samples=None) == (None, 4500)
    # Never fewer than 100 images or 1,000 samples.
    assert fit_budget(Costs(per_image=10.0, per_sample=10.0), 60.0, 10_000, limit=None, samples=None) == (100, 1000)
    assert fit_budget(Costs(per_image=1e-6, per_sample=None), 60.0, 10_000, limit=None, samples=0) == (None, 0)


def test_the_metrics_cost_is_measured_and_a_conditional_model_pays_for_its_classes_too():
    from dgm_cli.evaluation_budget import metric_costs

    torch.manual_seed(3)
    before = torch.rand(3)
    per_sample, fixed = metric_costs(128, 10_000, classes=0)
    conditional_per_sample, conditional_fixed = metric_costs(128, 10_000, classes=10)
    # Two KIDs on subsets of 1,000 against twenty-two (every class's too, 1,000 samples a class): ten times the
    # fixed cost, far beyond the timing's noise.
    assert per_sample >= 0 and 0 < 2 * fixed < conditional_fixed
    torch.manual_seed(3)
    assert torch.equal(torch.rand(3), before)  # timed on its own random stream: the evaluation's is untouched


def test_eval_answers_within_its_budget_and_measures_on_a_forked_random_stream(tmp_path):
    import dgm_cli as dgm

    model = dgm.create_model("vae", hidden=32, zdim=4)
    fixed = {"limit": 300, "samples": 0, "iw_samples": 20, "mc_samples": 0, "seed": 5}
    # Nothing left to size: no costs are measured and the budget changes nothing.
    assert (
        dgm.evaluate(model, "mnist-mini", **fixed).to_dict()
        == dgm.evaluate(model, "mnist-mini", minutes=None, **fixed).to_dict()
    )
    full = dgm.evaluate(model, "mnist-mini", minutes=None, iw_samples=20, mc_samples=0, samples=0).to_dict()
    assert "budget" not in full and full["likelihood"]["images"] == 1000
    # The default budget of a minute affords all of mnist-mini's test split: the full protocol, and measuring
    # the costs first (on forked random streams) changed no number.
    default = dgm.evaluate(model, "mnist-mini", iw_samples=20, mc_samples=0, samples=0).to_dict()
    assert default.pop("budget")["full_protocol"] is True and default == full
    # A budget too small for it: a seeded subset, the time it takes expected within the budget.
    sized = dgm.evaluate(model, "mnist-mini", minutes=0.1, iw_samples=20, mc_samples=0, samples=0).to_dict()
    assert sized["budget"]["expected_seconds"] <= 6 + 1 and sized["budget"]["full_protocol_seconds"] > 0
    assert sized["likelihood"]["images"] >= 100


def test_eval_full_and_minutes_exclude_each_other():
    from conftest import invoke_dgm

    result = invoke_dgm("eval", "vae", "--full", "--minutes", "2")
    assert result.exit_code == 2 and "give --full or --minutes, not both" in result.output
    assert "using the pretrained" not in result.output  # refused before anything is loaded


def test_a_long_full_evaluation_says_how_long_before_it_starts(monkeypatch):
    import io

    import dgm_cli as dgm
    from dgm_cli import evaluation_budget
    from dgm_cli.progress import Reporter

    monkeypatch.setattr(evaluation_budget, "PROBED_WHEN", 100)  # mnist-mini's 1,000 test images count as many
    monkeypatch.setattr(evaluation_budget, "WORTH_SAYING_SECONDS", 0.0)  # and any time as long
    written = io.StringIO()
    model = dgm.create_model("vae", hidden=32, zdim=4)
    options = {"iw_samples": 10, "mc_samples": 0, "samples": 0, "minutes": None}
    report = dgm.evaluate(model, "mnist-mini", reporter=Reporter(Console(file=written, width=500)), **options)
    assert "this evaluation takes about" in written.getvalue() and "without --full" in written.getvalue()
    assert report.budget is None and report.likelihood["images"] == 1000  # said, not changed


# ---------------------------------------------------------------- defaults tuned for a budget


def test_a_budget_trains_with_its_tuned_configuration_where_options_are_not_given(monkeypatch):
    import dataclasses

    from dgm_cli import registry
    from dgm_cli.training import new_config

    spec = registry.get_spec("vae")
    tuned = registry.BudgetDefaults(up_to=5, fields={"hidden": 16, "lr": 0.002}, searched_at=5, record="x.json")
    monkeypatch.setitem(registry._REGISTRY, "vae", dataclasses.replace(spec, budget_defaults=(tuned,)))
    defaults = registry.create_config("vae")
    assert (new_config("vae", {"minutes": 5}, None).hidden, new_config("vae", {"minutes": 5}, None).lr) == (16, 0.002)
    assert new_config("vae", {"minutes": 1, "hidden": 64}, None).hidden == 64  # an option given wins
    assert new_config("vae", {"minutes": 6}, None).hidden == defaults.hidden  # a longer budget: none searched
    assert new_config("vae", {"epochs": 3}, None).hidden == defaults.hidden  # no budget, no tuning
    assert new_config("vae", {"minutes": 5, "preset": "iwae-1l-vae"}, None).hidden != 16  # a preset is whole


def test_a_tuned_configuration_searched_as_a_whole_is_left_out_when_another_model_is_asked_for(monkeypatch):
    import dataclasses

    from dgm_cli import registry
    from dgm_cli.training import new_config

    spec = registry.get_spec("flow")
    fields = {"arch": "realnvp-ms", "channels": 16, "dequantization": "variational"}
    tuned = registry.BudgetDefaults(5, fields, searched_at=5, record="x.json", unless_given=("arch",))
    monkeypatch.setitem(registry._REGISTRY, "flow", dataclasses.replace(spec, budget_defaults=(tuned,)))
    narrower = new_config("flow", {"minutes": 5, "channels": 32}, None)  # a field given; the rest still tuned
    assert (narrower.arch, narrower.channels, narrower.dequantization) == ("realnvp-ms", 32, "variational")
    mlp = new_config("flow", {"minutes": 5, "arch": "realnvp-mlp"}, None)  # another architecture: none of it
    assert mlp.dequantization == registry.create_config("flow").dequantization == "uniform"


def test_every_tuned_configuration_is_the_one_its_search_record_chose():
    import json
    from pathlib import Path

    from dgm_cli import registry

    docs = Path(__file__).resolve().parents[1] / "docs"
    for name in registry.list_models():
        for tuned in registry.get_spec(name).budget_defaults:
            record = json.loads((docs / tuned.record).read_text())
            chosen = next(result for result in record["results"] if result["name"] == record["chosen"])
            assert (record["family"], record["minutes"], chosen["options"]) == (name, tuned.searched_at, tuned.fields)
            assert min(result["validation"]["value"] for result in record["results"]) == chosen["validation"]["value"]
            registry.create_config(name, **tuned.fields)  # fields the config takes, within their limits
