"""The feature network: its augmentation, its size and its training interface."""

import torch

from dgm_cli.models.classifier import FEATURES, random_shift
from dgm_cli.registry import create_model


def test_random_shift_moves_each_image_by_at_most_the_limit_and_fills_with_zeros():
    torch.manual_seed(0)
    image = torch.zeros(28, 28, dtype=torch.uint8)
    image[10, 12] = 255
    shifted = random_shift(image.expand(500, 28, 28), 2)
    positions = (shifted == 255).nonzero()[:, 1:]
    assert len(positions) == 500  # one bright pixel per image, never lost
    offsets = positions - torch.tensor([10, 12])
    assert offsets.abs().max() == 2 and len({tuple(o) for o in offsets.tolist()}) == 25
    assert torch.equal(random_shift(image[None], 0), image[None])


def test_network_is_small_and_exposes_128_features():
    model = create_model("classifier")
    assert sum(p.numel() for p in model.parameters()) < 250_000  # under 1 MB as float32
    images = torch.rand(4, 1, 28, 28)
    assert model.features(images).shape == (4, FEATURES)
    assert model(images).shape == (4, 10)


def test_training_step_learns_from_the_labels():
    torch.manual_seed(0)
    model = create_model("classifier", shift=0)
    [optimizer] = model.configure_optimizers()
    batch = (torch.rand(32, 28, 28) * 255).to(torch.uint8)
    labels = torch.randint(0, 10, (32,))
    first = model.training_step(batch, labels)["loss"].item()
    for _ in range(30):
        metrics = model.training_step(batch, labels)
        optimizer.zero_grad()
        metrics["loss"].backward()
        optimizer.step()
    assert metrics["loss"].item() < first / 4 and metrics["accuracy"].item() > 0.9
    assert "classifier" in model.capabilities and "sample" not in model.capabilities


def test_dgm_eval_classifier_without_a_path_evaluates_the_shipped_one(tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from dgm_cli.cli import app

    monkeypatch.chdir(tmp_path)  # no checkpoints/classifier.safetensors here
    result = CliRunner().invoke(app, ["eval", "classifier", "--dataset", "mnist-mini", "--limit", "200", "--json"])
    assert result.exit_code == 0, result.output
    assert "using the pretrained classifier" in result.stderr
    assert json.loads(result.stdout)["classification"]["accuracy"] > 0.95
