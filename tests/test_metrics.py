"""Sample-quality metrics against closed forms and known cases, and the shipped feature network."""

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dgm_cli.cli import app
from dgm_cli.data import load_dataset
from dgm_cli.metrics import (
    SHIPPED_CLASSIFIER,
    class_coverage,
    embed,
    frechet_distance,
    inception_score,
    kernel_distance,
    load_classifier,
    precision_recall,
)

runner = CliRunner()


def test_frechet_distance_matches_the_gaussian_closed_form():
    """N(0, I) against N(m, 4I) in d dimensions: |m|^2 + tr(I + 4I - 2 sqrt(4I)) = |m|^2 + d."""
    torch.manual_seed(0)
    d, n = 8, 200_000
    shift = torch.full((d,), 0.5, dtype=torch.float64)
    real = torch.randn(n, d, dtype=torch.float64)
    fake = 2 * torch.randn(n, d, dtype=torch.float64) + shift
    assert frechet_distance(real, fake) == pytest.approx(shift.square().sum().item() + d, rel=0.02)
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-6)


def unbiased_mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    """The unbiased MMD^2 with KID's kernel k(a, b) = (a.b / d + 1)^3, written out."""
    d = x.shape[1]
    kernel = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    m = len(x)
    return (
        (kxx.sum() - kxx.trace()) / (m * (m - 1)) + (kyy.sum() - kyy.trace()) / (m * (m - 1)) - 2 * kxy.mean()
    ).item()


def test_kernel_distance_is_the_unbiased_mmd_and_is_centred_on_zero_for_one_distribution():
    torch.manual_seed(0)
    x, y = torch.randn(300, 4, dtype=torch.float64), torch.randn(300, 4, dtype=torch.float64) + 0.3
    mean, _ = kernel_distance(x, y)  # one subset of all 300: the full-sample statistic
    assert mean == pytest.approx(unbiased_mmd2(x, y), rel=1e-6)
    # Same distribution: an unbiased estimator averages to zero (a biased one would stay positive).
    values = [
        kernel_distance(torch.randn(300, 4, dtype=torch.float64), torch.randn(300, 4, dtype=torch.float64))[0]
        for _ in range(30)
    ]
    spread = torch.tensor(values).std().item()
    assert abs(sum(values) / len(values)) < 3 * spread / math.sqrt(len(values))


def test_precision_and_recall_on_known_sets():
    torch.manual_seed(0)
    real = torch.randn(500, 3, dtype=torch.float64)
    assert precision_recall(real, real.clone()) == (1.0, 1.0)
    assert precision_recall(real, real + 100) == (0.0, 0.0)
    precision, recall = precision_recall(real, real[real[:, 0] > 0])  # half the modes: faithful but narrow
    assert precision == 1.0 and recall < 0.8


def test_inception_score_and_class_coverage_extremes():
    assert inception_score(torch.full((100, 10), 0.1, dtype=torch.float64)) == pytest.approx(1.0)
    balanced = torch.eye(10, dtype=torch.float64).repeat(10, 1)
    assert inception_score(balanced) == pytest.approx(10.0, rel=1e-6)
    assert inception_score(torch.eye(10, dtype=torch.float64)[[3] * 50]) == pytest.approx(1.0)
    coverage = class_coverage(balanced)
    assert coverage["histogram"] == [10] * 10 and coverage["classes_at_5_percent"] == 10
    assert coverage["entropy_bits"] == pytest.approx(math.log2(10))
    collapsed = class_coverage(torch.eye(10, dtype=torch.float64)[[7] * 96 + [1] * 4])
    assert collapsed["classes_at_5_percent"] == 1 and collapsed["histogram"][7] == 96


@pytest.fixture(scope="module")
def shipped():
    return load_classifier()


def test_shipped_classifier_is_small_and_knows_where_it_came_from(shipped):
    from dgm_cli.checkpoint import read_header

    assert SHIPPED_CLASSIFIER.stat().st_size < 1_000_000
    info = read_header(SHIPPED_CLASSIFIER, expected_model="classifier")
    assert info.data["name"] == "mnist" and not info.data["fallback"]
    assert info.train["metrics"]["test_accuracy"] >= 0.993
    assert "seed" in info.train


def test_shipped_accuracy_is_what_the_eval_command_reports(mnist_root):
    from dgm_cli.checkpoint import read_header

    recorded = read_header(SHIPPED_CLASSIFIER).train["metrics"]["test_accuracy"]
    result = runner.invoke(
        app, ["eval", "classifier", str(SHIPPED_CLASSIFIER), "--data-dir", str(mnist_root), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["classification"]["accuracy"] == recorded


def test_shipped_fashion_classifier_is_small_and_records_its_data():
    from dgm_cli.checkpoint import read_header
    from dgm_cli.feature_network import SHIPPED

    path = SHIPPED["fashion-mnist"]
    assert path.stat().st_size < 1_000_000
    info = read_header(path, expected_model="classifier")
    assert info.data["name"] == "fashion-mnist" and info.data["train"] == 50_000 and not info.data["fallback"]
    assert info.train["metrics"]["test_accuracy"] >= 0.915


def test_shipped_fashion_accuracy_is_what_the_eval_command_reports():
    from dgm_cli.checkpoint import read_header
    from dgm_cli.data import SOURCES, find_files
    from dgm_cli.feature_network import SHIPPED

    if find_files(SOURCES["fashion-mnist"], Path("no-data")) is None:
        pytest.skip("Fashion-MNIST is not installed (Debian's dataset-fashion-mnist)")
    path = SHIPPED["fashion-mnist"]
    recorded = read_header(path).train["metrics"]["test_accuracy"]
    result = runner.invoke(app, ["eval", "classifier", str(path), "--dataset", "fashion-mnist", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["classification"]["accuracy"] == recorded


def test_fid_in_the_classifier_space_is_zero_for_a_set_against_itself_and_grows_with_damage(shipped):
    images = load_dataset("mnist-mini").test.images.float()[:, None] / 255
    clean, _ = embed(shipped, images)
    generator = torch.Generator().manual_seed(0)
    noisy, _ = embed(shipped, (images + 0.3 * torch.randn(images.shape, generator=generator)).clamp(0, 1))
    blurred, _ = embed(shipped, torch.nn.functional.avg_pool2d(images, 3, stride=1, padding=1))
    heavy, _ = embed(shipped, torch.nn.functional.avg_pool2d(images, 5, stride=1, padding=2))
    assert frechet_distance(clean, clean) == pytest.approx(0.0, abs=1e-6)
    assert 0 < frechet_distance(clean, blurred) < frechet_distance(clean, heavy)
    assert frechet_distance(clean, noisy) > 10 * frechet_distance(clean[:500], clean[500:])


def test_eval_prints_sample_quality_beside_the_real_floor(tmp_path):
    trained = runner.invoke(
        app,
        [
            "train",
            "gan",
            "--epochs",
            "0",
            "--latent-dim",
            "8",
            "--dataset",
            "mnist-mini",
            "--out",
            "g",
            "--checkpoint-dir",
            str(tmp_path),
        ],
    )
    assert trained.exit_code == 0, trained.output
    result = runner.invoke(app, ["eval", "gan", "g", "--samples", "300", "--json"])  # the run folder: its last epoch
    assert result.exit_code == 0, result.output
    section = json.loads(result.stdout)["sample_quality"]
    assert section["samples"] == 300 and section["floor_split"] == "val"
    model, floor = section["model"], section["real_floor"]
    assert floor["images"] == 300 and floor["fid"] < model["fid"]
    assert floor["classes_at_5_percent"] == 10 and sum(model["histogram"]) == 300
    assert "real floor" in result.stderr and "FID" in result.stderr


def test_class_endpoints_are_drawn_as_the_classifier_reads_them(shipped, tmp_path):
    """With a 'generator' that decodes each latent to a real test digit, the endpoints' digits are checkable."""
    from dgm_cli.interpolation import class_endpoints
    from dgm_cli.models.base import GenerativeModel

    mini = load_dataset("mnist-mini").test

    class LookupGenerator(GenerativeModel):
        capabilities = frozenset({"latent"})
        latent_dim = 1

        def __init__(self):
            super().__init__(config=None)
            self.anchor = torch.nn.Parameter(torch.zeros(1))

        def decode_images(self, z, labels=None):
            index = (torch.special.ndtr(z[:, 0]) * len(mini)).long().clamp(0, len(mini) - 1)
            return mini.images[index].float()[:, None] / 255

    model = LookupGenerator()
    starts, ends = class_endpoints(model, shipped, (3, 8), rows=4, seed=0)
    for latents, digit in ((starts, 3), (ends, 8)):
        assert shipped(model.decode_images(latents)).argmax(1).tolist() == [digit] * 4
    same_a, same_b = class_endpoints(model, shipped, (5, 5), rows=2, seed=0)
    assert not any(torch.equal(a, b) for a in same_a for b in same_b)


def test_interpolate_classes_option_and_an_impossible_request(shipped, tmp_path):
    from dgm_cli.errors import DgmError
    from dgm_cli.interpolation import class_endpoints
    from dgm_cli.registry import create_model

    trained = runner.invoke(
        app,
        [
            "train",
            "vae",
            "--epochs",
            "0",
            "--hidden",
            "8",
            "--dataset",
            "mnist-mini",
            "--out",
            "v",
            "--checkpoint-dir",
            str(tmp_path),
        ],
    )
    assert trained.exit_code == 0
    bad = runner.invoke(app, ["interpolate", "vae", str(tmp_path / "vae.safetensors"), "--classes", "3"])
    assert bad.exit_code == 2 and "two digits" in bad.stderr
    # An untrained VAE decodes every latent to the same grey image: never a 3 and an 8 both.
    with pytest.raises(DgmError, match="the classifier was sure of only"):
        class_endpoints(create_model("vae", hidden=8), shipped, (3, 8), rows=1, seed=0, budget=2000)
