"""The GAN: the seed's architecture, stable losses, both optimizer steps, the weight average."""

import math

import pytest
import torch
from torch import nn
from torch.distributions import Bernoulli

from dgm_cli.models.base import ema_decay
from dgm_cli.models.gan import GAN, GANConfig, logit_loss
from dgm_cli.registry import create_model


def widths(network: nn.Sequential) -> list[int]:
    return [layer.out_features for layer in network if isinstance(layer, nn.Linear)]


def test_architecture_is_the_seed_reports():
    model = create_model("gan")
    assert widths(model.generator) == [128, 256, 512, 1024, 784]
    assert model.generator[0].in_features == 100
    assert [layer.num_features for layer in model.generator if isinstance(layer, nn.BatchNorm1d)] == [256, 512, 1024]
    assert isinstance(model.generator[-1], nn.Tanh)
    assert widths(model.discriminator) == [512, 256, 1]
    assert [layer.p for layer in model.discriminator if isinstance(layer, nn.Dropout)] == [0.3, 0.3]
    assert all(layer.negative_slope == 0.2 for layer in model.modules() if isinstance(layer, nn.LeakyReLU))
    assert model.generator_ema is None


def test_logit_loss_is_the_bernoulli_negative_log_likelihood_even_for_extreme_logits():
    logits = torch.tensor([[-200.0], [-3.0], [0.0], [2.5], [200.0]], dtype=torch.float64)
    for target in (0.0, 1.0):
        reference = -Bernoulli(logits=logits).log_prob(torch.full_like(logits, target)).mean()
        torch.testing.assert_close(logit_loss(logits, target), reference)
    # the non-saturating generator loss is -log D(G(z)): finite where log(1 - D) saturates
    assert logit_loss(torch.tensor([[-200.0]]), 1.0).item() == pytest.approx(200.0)


def test_scaling_maps_pixels_to_minus_one_one():
    batch = torch.tensor([[0, 255], [51, 204]], dtype=torch.uint8).view(1, 2, 2)
    torch.testing.assert_close(GAN.scale(batch), torch.tensor([[-1.0, 1.0, -0.6, 0.6]]))


def test_samples_have_the_right_shape_range_and_are_seeded():
    model = create_model("gan", latent_dim=8)
    first = model.sample(6, generator=torch.Generator().manual_seed(1))
    again = model.sample(6, generator=torch.Generator().manual_seed(1))
    assert first.shape == (6, 1, 28, 28) and first.min() >= 0 and first.max() <= 1
    assert torch.equal(first, again)
    assert not torch.equal(first, model.sample(6, generator=torch.Generator().manual_seed(2)))


def test_one_training_step_moves_both_networks_and_reports_probabilities():
    torch.manual_seed(0)
    model = create_model("gan", latent_dim=8)
    model.configure_optimizers()
    before_g = [p.detach().clone() for p in model.generator.parameters()]
    before_d = [p.detach().clone() for p in model.discriminator.parameters()]
    metrics = model.training_step((torch.rand(16, 28, 28) * 255).to(torch.uint8))
    assert set(metrics) == {"d_loss", "g_loss", "d_real", "d_fake"}
    assert 0 < metrics["d_real"].item() < 1 and 0 < metrics["d_fake"].item() < 1
    assert all(not torch.equal(a, b) for a, b in zip(before_g, model.generator.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(before_d, model.discriminator.parameters()))


def test_untrained_discriminator_loss_is_about_log_4():
    torch.manual_seed(0)
    model = create_model("gan").eval()
    with torch.no_grad():
        metrics = model.validation_step((torch.rand(512, 28, 28) * 255).to(torch.uint8))
    assert metrics["d_loss"].item() == pytest.approx(math.log(4), abs=0.1)


def test_weight_average_follows_its_warmed_up_decay_exactly():
    torch.manual_seed(0)
    model = GAN(GANConfig(latent_dim=8, ema=0.9))
    model.configure_optimizers()
    # min(0.9, (1 + t) / (10 + t)) for the updates t = 0, 1, ...: 0.1, 2/11, 3/12, ... and 0.9 from t = 80 on
    assert [ema_decay(model.config.ema, t) for t in (0, 1, 2, 80, 1000)] == [0.1, 2 / 11, 3 / 12, 0.9, 0.9]
    for step in range(3):
        average_before = [p.detach().clone() for p in model.generator_ema.parameters()]
        model.training_step((torch.rand(16, 28, 28) * 255).to(torch.uint8))
        decay = ema_decay(model.config.ema, step)
        for old, live, average in zip(average_before, model.generator.parameters(), model.generator_ema.parameters()):
            torch.testing.assert_close(average, decay * old + (1 - decay) * live.detach())
    for live, average in zip(model.generator.buffers(), model.generator_ema.buffers()):
        assert torch.equal(live, average)
    assert model.keeps_average
    z = torch.randn(3, 8)
    model.eval()
    assert not torch.equal(model.decode_images(z), model.decode_images(z, averaged=False))


def test_training_command_writes_gan_figures_and_metrics(tmp_path):
    import json

    from typer.testing import CliRunner

    from dgm_cli.cli import app

    runner = CliRunner()
    # the default sample epochs 0, 2, 8, 100, 200 are clipped to this one-epoch run: 0 and 1
    result = runner.invoke(
        app, ["train", "gan", "--epochs", "1", "--ema", "0.99", "--dataset", "mnist-mini", "--out", "gan-run", "--json"]
    )
    assert result.exit_code == 0, result.output
    run = tmp_path / "gan-run"
    for name in ("samples/epoch_000.png", "samples/epoch_001.png", "samples/epoch_001_raw.png", "curves.png"):
        assert (run / name).is_file(), name
    assert len(list((run / "samples").iterdir())) == 4
    assert not (run / "best.safetensors").exists()  # no held-out number ranks GAN epochs
    final = json.loads(result.stdout)["final"]
    assert {"train_d_loss", "train_g_loss", "train_d_real", "train_d_fake", "val_d_real", "val_d_fake"} <= set(final)
    for flags in ([], ["--raw"]):
        sampled = runner.invoke(
            app, ["sample", "gan", "checkpoints/gan.safetensors", "-n", "64", "--out", "s.png", *flags]
        )
        assert sampled.exit_code == 0, sampled.output
    info = json.loads(runner.invoke(app, ["info", "checkpoints/gan.safetensors", "--json"]).stdout)
    assert any(name.startswith("generator_ema.") for name in info["tensors"])


def test_a_collapsing_gan_stops_with_the_last_good_checkpoint(monkeypatch):
    from typer.testing import CliRunner

    from dgm_cli.cli import app

    healthy = GAN.training_step
    monkeypatch.setattr(
        GAN,
        "training_step",
        lambda self, batch, labels=None: {**healthy(self, batch), "g_loss": torch.tensor(float("inf"))},
    )
    result = CliRunner().invoke(app, ["train", "gan", "--epochs", "1", "--dataset", "mnist-mini", "--out", "bad"])
    assert result.exit_code == 1 and "training diverged in epoch 1 (train_g_loss = inf)" in result.stderr


def test_a_last_batch_of_one_image_is_skipped_rather_than_crashing_batchnorm():
    from typer.testing import CliRunner

    from dgm_cli.cli import app

    # 5,000 training images in batches of 4,999 leave one image over.
    result = CliRunner().invoke(
        app,
        [
            "train",
            "gan",
            "--epochs",
            "1",
            "--batch-size",
            "4999",
            "--dataset",
            "mnist-mini",
            "--out",
            "odd",
            "--sample-epochs",
            "",
        ],
    )
    assert result.exit_code == 0, result.output


def test_a_short_run_with_a_slow_average_samples_from_near_the_live_weights():
    """--ema 0.999 for 50 steps: without a warm-up the average would still be 95% its random start."""
    torch.manual_seed(0)
    model = GAN(GANConfig(latent_dim=8, ema=0.999))
    model.configure_optimizers()
    start = [p.detach().clone() for p in model.generator_ema.parameters()]
    for _ in range(50):
        model.training_step((torch.rand(16, 28, 28) * 255).to(torch.uint8))

    def distance(first, second):
        return sum((a - b).square().sum() for a, b in zip(first, second)).sqrt().item()

    live, average = list(model.generator.parameters()), list(model.generator_ema.parameters())
    assert distance(average, live) < 0.5 * distance(start, live)  # measured 0.34; 0.95 without the warm-up
