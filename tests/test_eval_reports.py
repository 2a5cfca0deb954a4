"""`dgm eval --json` against reports written by the code before the evaluation moved into the library.

The expected numbers are files made by an earlier commit (tests/fixtures/eval-reports/README.md), never
computed here. Paths in the reports differ between machines and are not compared."""

import hashlib
import json
import math
from pathlib import Path

import pytest
from cli_calls import ok

FIXTURES = Path(__file__).parent / "fixtures" / "eval-reports"
ASSETS = Path(__file__).resolve().parents[1] / "dgm_cli" / "assets"
PATH_KEYS = {"checkpoint", "data_location"}
# Added since the fixtures were made: the SHA-256 of the feature network's weights, checked against the file.
ADDED_KEYS = {"sha256"}
CASES = {
    "vae": ("vae", "vae.safetensors", ["--iw-samples", 20, "--mc-samples", 20]),
    "vae-raw": (
        "vae",
        "vae.safetensors",
        ["--iw-samples", 10, "--mc-samples", 0, "--raw", "--split", "val", "--temperature", 0.8],
    ),
    "vae-conditional": ("vae", "vae-conditional.safetensors", ["--iw-samples", 10, "--mc-samples", 10]),
    "gan": ("gan", None, []),
    "flow": ("flow", "flow.safetensors", ["--dequantization-draws", 2]),
    "diffusion": ("diffusion", "diffusion.safetensors", ["--bound-timesteps", 10, "--steps", 5, "--eta", 0.5]),
    "classifier": ("classifier", ASSETS / "classifier" / "classifier.safetensors", ["--dataset", "mnist-mini"]),
}


def assert_same(expected, actual, where="report"):
    if isinstance(expected, dict):
        assert set(actual) - ADDED_KEYS == set(expected), f"{where}: keys {sorted(set(actual) ^ set(expected))} differ"
        if "sha256" in actual:
            assert actual["sha256"] == hashlib.sha256(Path(actual["checkpoint"]).read_bytes()).hexdigest()
        for key, value in expected.items():
            if key not in PATH_KEYS:
                assert_same(value, actual[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), where
        for index, (value, got) in enumerate(zip(expected, actual)):
            assert_same(value, got, f"{where}[{index}]")
    elif isinstance(expected, float) and not isinstance(actual, bool):
        assert math.isclose(actual, expected, rel_tol=1e-6, abs_tol=1e-9), f"{where}: {actual} != {expected}"
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def untrained_gan() -> Path:
    """The GAN of gan.json: its seeded initialisation, written by an --epochs 0 run (8 MB, so not committed)."""
    ok(
        "train",
        "gan",
        "--latent-dim",
        8,
        "--dataset",
        "mnist-mini",
        "--epochs",
        0,
        "--sample-epochs",
        "",
        "--seed",
        1,
        "--out",
        "gan-run",
        "--checkpoint-dir",
        "",
    )
    return Path("gan-run") / "last.safetensors"


@pytest.mark.parametrize("report", sorted(CASES))
def test_eval_json_matches_the_report_made_before_the_move(report):
    model, checkpoint, options = CASES[report]
    path = untrained_gan() if checkpoint is None else FIXTURES / checkpoint
    # --full: the protocol the reports were made with (every image of the split), then the default.
    result = ok("eval", model, path, "--seed", 3, "--samples", 300, "--json", "--full", *options)
    expected = json.loads((FIXTURES / f"{report}.json").read_text())
    assert_same(expected, json.loads(result.stdout))
