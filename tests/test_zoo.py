"""The model zoo: every pretrained model is installed, inference-only, named, and carries the evaluation
report its headline is read from; names resolve from any folder; inference-only files sample and evaluate
exactly as the full checkpoint does, and refuse what they cannot do."""

import fnmatch
import json
import tomllib
from pathlib import Path

import pytest
from conftest import REPO, invoke_dgm

import dgm_cli as dgm
from dgm_cli.checkpoint import read_header
from dgm_cli.data import ASSETS
from dgm_cli.registry import create_model
from dgm_cli.zoo import PRETRAINED, by_name, find

MB = 1_000_000


def test_every_pretrained_model_is_an_inference_only_checkpoint_of_its_family_with_its_report():
    for entry in PRETRAINED:
        info = read_header(entry.path)
        assert info.model_name == entry.family, entry.name
        report = entry.read_report()
        assert report["model"] == entry.family
        # the headline is the report's own number, not one typed into the code
        number = entry.headline()
        if entry.measure == "nll":
            assert number["value"] == -report["likelihood"]["importance_weighted"]["nats"]
        elif entry.measure == "fid":
            assert number["value"] == report["sample_quality"]["model"]["fid"]
    # a model that keeps a weight average or a discriminator ships without what only training reads
    for name in ("gan", "diffusion", "vae-iwae-1l-vae", "vae-iwae-2l-vae"):
        assert read_header(find(name).path).inference_only, name


def test_names_and_aliases_are_unique_and_each_family_has_a_default():
    names = [name for entry in PRETRAINED for name in (entry.name, *entry.aliases)]
    assert len(names) == len(set(names))
    assert {"vae", "gan", "flow", "diffusion", "classifier"} <= set(by_name())
    assert all(find(f"vae-{preset}") for preset in ("iwae-1l-vae", "iwae-1l-k5", "iwae-2l-vae"))


def test_the_shipped_weights_stay_within_30_mb_and_are_package_data():
    weights = sorted(ASSETS.glob("*/*.safetensors"))
    assert sum(path.stat().st_size for path in weights) <= 30 * MB
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["dgm_cli"]
    package = REPO / "dgm_cli"
    for entry in PRETRAINED:
        for path in (entry.path, ASSETS / entry.report):
            relative = str(path.relative_to(package))
            assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative


def test_names_resolve_from_any_folder_and_a_model_trained_here_comes_first(tmp_path):
    result = invoke_dgm("sample", "gan", "-n", "4", "--out", "g.png")
    assert result.exit_code == 0, result.output
    assert Path("g.png").is_file() and str(find("gan").path) in result.stderr
    model = dgm.load("vae-iwae-1l-vae", device="cpu")
    assert (
        model.model_name == "vae"
        and model.config.preset == "iwae-1l-vae"
        and model.path == find("vae-iwae-1l-vae").path
    )
    assert dgm.load(model="flow", device="cpu").path == find("flow-tutorial-multiscale").path
    with pytest.raises(dgm.DgmError, match="holds a vae model, not a gan"):
        dgm.load(find("vae").path, model="gan")

    Path("checkpoints").mkdir()
    create_model("vae", hidden=8).save("checkpoints/vae.safetensors")
    assert dgm.load("vae", device="cpu").path == Path("checkpoints/vae.safetensors")
    assert dgm.load("vae-zdim2", device="cpu").path == find("vae-zdim2").path
    assert invoke_dgm("manifold", "vae-zdim2", "--grid", "3", "--out", "m.png").exit_code == 0


def test_models_pretrained_lists_each_model_with_its_number_size_and_commands():
    listing = json.loads(invoke_dgm("models", "--pretrained", "--json").stdout)["pretrained"]
    assert [entry["name"] for entry in listing] == [entry.name for entry in PRETRAINED]
    for entry in listing:
        assert entry["bytes"] == Path(entry["file"]).stat().st_size and entry["made_by"].startswith("dgm train")
    text = invoke_dgm("models", "--pretrained").stdout.splitlines()
    first = text.index(next(line for line in text if line.startswith("vae-iwae-2l-vae ")))
    report = find("vae-iwae-2l-vae").read_report()["likelihood"]["importance_weighted"]
    assert text[first + 2].startswith(f"  {-report['nats']:.2f} ± {report['standard_error']:.2f} nats: NLL (test split")
    assert "k=5000" in text[first + 2] and text[first + 3].startswith("  made by: dgm train vae --preset iwae-2l-vae")


def test_every_measure_the_zoo_uses_is_one_headline_of_reads():
    from dgm_cli.zoo import MEASURES, headline_of

    assert {entry.measure for entry in PRETRAINED} <= set(MEASURES)
    with pytest.raises(ValueError):
        headline_of({}, "beauty")
