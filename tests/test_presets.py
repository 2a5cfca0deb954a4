"""Presets through the command line: --preset sets a published configuration, options beside it win, the
published number travels with the checkpoint, dgm eval prints it beside its own, dgm presets lists both."""

import json
from pathlib import Path

from typer.testing import CliRunner

from dgm_cli.cli import app
from dgm_cli.models.vae import PRESETS
from dgm_cli.zoo import find

SMALL = ["--dataset", "mnist-mini", "--epochs", "1", "--hidden", "16", "--batch-size", "500", "--sample-epochs", ""]


def dgm(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result


def ok(*args):
    result = dgm(*args)
    assert result.exit_code == 0, result.output
    return result


def own_rows(preset: str = "iwae-1l-vae") -> list[dict]:
    """dgm presets' rows of your own checkpoints of a preset (in checkpoints/), the pretrained model's left out."""
    rows = json.loads(ok("presets", "vae", "--json").stdout)["presets"]
    return [row for row in rows if row["name"] == preset and row["pretrained"] is None]


def test_a_preset_sets_its_fields_and_explicit_options_override_them():
    ok("train", "vae", "--preset", "iwae-1l-k5", "--out", "run", *SMALL)
    config = json.loads(Path("run/config.json").read_text())["config"]
    preset = PRESETS["iwae-1l-k5"].overrides
    assert config["hidden"] == 16 and config["epochs"] == 1 and config["batch_size"] == 500  # given
    assert {
        key: config[key] for key in ("activation", "hidden_layers", "zdim", "objective", "k", "adam_eps", "lr_schedule")
    } == {
        key: preset[key] for key in ("activation", "hidden_layers", "zdim", "objective", "k", "adam_eps", "lr_schedule")
    }
    assert config["preset"] == "iwae-1l-k5"
    info = json.loads(ok("info", "run/last.safetensors", "--json").stdout)
    assert info["train"]["preset"]["published"] == 85.54 and info["config"]["preset"] == "iwae-1l-k5"
    records = [json.loads(line) for line in Path("run/metrics.jsonl").read_text().splitlines()]
    assert "val_iwae" in records[-1] and records[-1]["val_iwae"] >= records[-1]["val_elbo"]  # the k=5 bound
    refused = dgm("train", "vae", "--resume", "run", "--epochs", "2", "--preset", "iwae-1l-vae")
    assert refused.exit_code == 1 and "leave out --preset" in refused.stderr


def test_eval_prints_the_published_number_and_says_when_the_protocol_differs():
    ok("train", "vae", "--preset", "iwae-1l-vae", "--out", "run", *SMALL)
    result = ok(
        "eval",
        "vae",
        "run/last.safetensors",
        "--iw-samples",
        "20",
        "--mc-samples",
        "0",
        "--samples",
        "0",
        "--limit",
        "50",
        "--json",
        "--result",
        "run/last.eval.json",
    )
    report = json.loads(result.stdout)
    published = report["published"]
    assert published["published"] == 86.76 and published["dgm"] == -report["likelihood"]["importance_weighted"]["nats"]
    assert published["differences"] == [
        "mnist-mini instead of mnist",
        "k=20 instead of 5000",
        "50 of the split's 1000 images",
    ]
    assert "preset iwae-1l-vae: published 86.76, dgm" in result.stderr and "not comparable" in result.stderr
    assert json.loads(Path("run/last.eval.json").read_text()) == report  # --result writes what --json prints


def test_presets_lists_the_published_numbers_and_dgms_own_where_evaluated_by_the_protocol():
    listing = json.loads(ok("presets", "--json").stdout)["presets"]
    listing = [row for row in listing if row["model"] == "vae"]
    assert [row["name"] for row in listing] == list(PRESETS)
    assert [row["published"] for row in listing] == [86.76, 85.54, 84.78, 85.33, 82.90]
    # The pretrained model of a preset brings dgm's number, read from its evaluation report; the others have none.
    for row in listing:
        pretrained = find(f"vae-{row['name']}")
        assert row["pretrained"] == (pretrained and pretrained.name)
        expected = (
            None if pretrained is None else -pretrained.read_report()["likelihood"]["importance_weighted"]["nats"]
        )
        assert row["dgm"] == expected

    ok("train", "vae", "--preset", "iwae-1l-vae", "--out", "run", *SMALL)
    Path("checkpoints").mkdir(exist_ok=True)
    Path("run/last.safetensors").replace("checkpoints/vae-iwae-1l-vae.safetensors")
    ok(
        "eval",
        "vae",
        "checkpoints/vae-iwae-1l-vae.safetensors",
        "--iw-samples",
        "10",
        "--mc-samples",
        "0",
        "--samples",
        "0",
        "--result",
        "checkpoints/vae-iwae-1l-vae.eval.json",
    )
    row = own_rows()[0]
    assert row["checkpoint"] == "checkpoints/vae-iwae-1l-vae.safetensors" and row["dgm"] is None  # not the protocol

    # The same report as if it had been the protocol: dgm's number is then the report's, read from the file.
    result = Path("checkpoints/vae-iwae-1l-vae.eval.json")
    report = json.loads(result.read_text())
    report["dataset"], report["likelihood"]["importance_weighted"]["samples"] = "mnist", 5000
    result.write_text(json.dumps(report))
    row = own_rows()[0]
    assert row["dgm"] == -report["likelihood"]["importance_weighted"]["nats"]
    table = ok("presets", "vae").stdout.splitlines()
    assert table[1].split()[:4] == [
        "vae",
        "iwae-1l-vae",
        "86.76",
        f"{listing[0]['dgm']:.2f}",
    ]  # the pretrained row first
    assert table[2].split()[:4] == ["vae", "iwae-1l-vae", "86.76", f"{row['dgm']:.2f}"]
    assert dgm("presets", "gan").exit_code == 0


def test_presets_lists_a_variant_of_a_preset_with_the_options_it_changed():
    ok("train", "vae", "--preset", "iwae-1l-vae", "--out", "run", "--val-size", "400", *SMALL)
    Path("checkpoints").mkdir(exist_ok=True)
    Path("run/last.safetensors").replace("checkpoints/vae-iwae-1l-vae-small.safetensors")
    Path("checkpoints/vae-iwae-1l-vae-junk.safetensors").write_bytes(b"not a checkpoint")  # passed over
    ok("train", "vae", "--preset", "iwae-1l-k5", "--out", "run2", *SMALL)
    Path("run2/last.safetensors").replace("checkpoints/vae-iwae-1l-vae-other.safetensors")  # another preset's model
    ok(
        "eval",
        "vae",
        "checkpoints/vae-iwae-1l-vae-small.safetensors",
        "--iw-samples",
        "10",
        "--mc-samples",
        "0",
        "--samples",
        "0",
        "--result",
        "checkpoints/vae-iwae-1l-vae-small.eval.json",
    )
    result = Path("checkpoints/vae-iwae-1l-vae-small.eval.json")  # as if it had been the protocol
    report = json.loads(result.read_text())
    report["dataset"], report["likelihood"]["importance_weighted"]["samples"] = "mnist", 5000
    result.write_text(json.dumps(report))

    rows = own_rows()  # no checkpoint of the preset itself here, so only the variant follows the pretrained row
    assert [row["variant"] for row in rows] == ["small"]
    # what SMALL set otherwise than the preset, and the training file's split
    assert rows[0]["changes"] == {"hidden": 16, "epochs": 1, "batch_size": 500, "val_size": 400}
    assert rows[0]["checkpoint"] == "checkpoints/vae-iwae-1l-vae-small.safetensors"
    assert rows[0]["dgm"] == -report["likelihood"]["importance_weighted"]["nats"]
    line = next(line for line in ok("presets", "vae").stdout.splitlines() if "variant" in line)
    assert line.split()[:2] == ["vae", "iwae-1l-vae"]
    assert line.endswith("variant small: --hidden 16 --epochs 1 --batch-size 500 --val-size 400")


def test_a_flow_presets_checkpoint_is_evaluated_by_its_published_protocol_unless_told_otherwise():
    from dgm_cli.checkpoint import save_checkpoint
    from dgm_cli.registry import create_model

    tiny = {
        "checkerboard_channels": 2,
        "channels": 4,
        "final_channels": 4,
        "gated_blocks": 1,
        "dequantization_channels": 2,
    }
    model = create_model("flow", preset="tutorial-multiscale", **tiny)
    save_checkpoint(Path("flow.safetensors"), model, model_name="flow", config=model.config, data={}, train={})
    common = ["eval", "flow", "flow.safetensors", "--dataset", "mnist-mini", "--limit", "6", "--samples", "0", "--json"]
    report = json.loads(ok(*common).stdout)
    assert report["likelihood"]["importance_weighted"]["samples"] == 8  # the tutorial's 8 dequantization draws
    assert report["published"]["published"] == 1.020 and report["published"]["preset"] == "tutorial-multiscale"
    assert "variational dequantization" in report["likelihood"]["dequantized"]["label"]
    report = json.loads(ok(*common, "--dequantization-draws", "1").stdout)
    assert "importance_weighted" not in report["likelihood"]


def test_a_presets_own_checkpoint_trained_otherwise_says_how_and_unused_fields_are_not_changes():
    from dgm_cli.checkpoint import read_header, save_checkpoint
    from dgm_cli.presets import variant_changes
    from dgm_cli.registry import create_model, get_spec

    ok("train", "vae", "--preset", "iwae-1l-vae", "--init", "pytorch", "--out", "run", *SMALL)
    Path("checkpoints").mkdir(exist_ok=True)
    Path("run/last.safetensors").replace("checkpoints/vae-iwae-1l-vae.safetensors")
    row = own_rows()[0]
    assert row["variant"] is None and row["changes"] == {
        "hidden": 16,
        "epochs": 1,
        "batch_size": 500,
        "init": "pytorch",
    }
    line = next(line for line in ok("presets", "vae").stdout.splitlines() if "this checkpoint" in line)
    assert line.endswith("; this checkpoint: --hidden 16 --epochs 1 --batch-size 500 --init pytorch")

    # An unconditional flow's --conditioning is unused: whatever it holds, it changes nothing the run computes.
    model = create_model("flow", preset="tutorial-multiscale", conditioning="prior")
    save_checkpoint(Path("flow.safetensors"), model, model_name="flow", config=model.config, data={}, train={})
    assert variant_changes(get_spec("flow"), read_header(Path("flow.safetensors"))) == {}


def test_a_variant_trained_on_from_another_checkpoint_names_it():
    ok("train", "vae", "--preset", "iwae-1l-vae", "--out", "run", *SMALL)
    ok(
        "train",
        "vae",
        "--init-from",
        "run/last.safetensors",
        "--ema",
        "0.9",
        "--dataset",
        "mnist-mini",
        "--epochs",
        "1",
        "--sample-epochs",
        "",
        "--out",
        "more",
    )
    Path("checkpoints").mkdir(exist_ok=True)
    Path("more/last.safetensors").replace("checkpoints/vae-iwae-1l-vae-more.safetensors")
    row = next(row for row in json.loads(ok("presets", "vae", "--json").stdout)["presets"] if row["variant"] == "more")
    # The checkpoint's options (the small network) come over; the 1 epoch is on top of the first run's 1.
    assert row["changes"] == {
        "init_from": "last.safetensors (epoch 1)",
        "hidden": 16,
        "epochs": 1,
        "batch_size": 500,
        "ema": 0.9,
    }
    line = next(line for line in ok("presets", "vae").stdout.splitlines() if "variant more" in line)
    assert line.endswith(
        "variant more: --init-from last.safetensors (epoch 1) --hidden 16 --epochs 1 --batch-size 500 --ema 0.9"
    )
