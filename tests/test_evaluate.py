"""Likelihood estimators against brute force: a 1-D latent space integrated on a fine grid."""

import math

import pytest
import torch

from dgm_cli.data import load_dataset
from dgm_cli.estimators import RunningLogWeights, bits_per_dim, evaluate_images, latent_log_likelihood
from dgm_cli.registry import create_model


def test_running_log_weights_match_the_whole_matrix():
    torch.manual_seed(0)
    log_weights = torch.randn(7, 1000, dtype=torch.float64) * 20
    running = RunningLogWeights(7, torch.device("cpu"))
    for chunk in log_weights.split(137, dim=1):
        running.add(chunk)
    torch.testing.assert_close(running.log_mean(), torch.logsumexp(log_weights, 1) - math.log(1000))
    torch.testing.assert_close(running.mean_log(), log_weights.mean(1))
    weights = torch.exp(log_weights - log_weights.max(1, keepdim=True).values)
    torch.testing.assert_close(running.effective_sample_size(), weights.sum(1) ** 2 / (weights**2).sum(1))


def test_bits_per_dim_closed_form():
    assert bits_per_dim(-784 * math.log(2)) == pytest.approx(1.0)
    assert bits_per_dim(-100.0) == pytest.approx(100 / (784 * math.log(2)))


def exact_log_likelihood(model, x: torch.Tensor) -> torch.Tensor:
    """log p(x) = log of the integral of p(x|z) N(z; 0, 1) dz, by the trapezoid rule on [-12, 12]."""
    z = torch.linspace(-12, 12, 24001, dtype=torch.float64)
    dz = (z[1] - z[0]).item()
    with torch.no_grad():
        logits = model.decoder_logits(z[:, None].float()).double()
    log_prior = -0.5 * (z.square() + math.log(2 * math.pi))
    # log p(x|z) = sum_d x_d l_d - softplus(l_d), written out rather than taken from the model code.
    log_px_z = x.double() @ logits.T - torch.nn.functional.softplus(logits).sum(-1)
    log_joint = log_px_z + log_prior  # (images, grid)
    return torch.logsumexp(log_joint, dim=1) + math.log(dz)


def test_estimators_converge_to_the_exact_likelihood_of_a_1d_latent_model():
    torch.manual_seed(0)
    model = create_model("vae", zdim=1, hidden=16)
    with torch.no_grad():  # a decoder whose output depends on z, unlike the all-zero starting layer
        model.decoder[-1].weight.normal_(0, 0.1)
    images = load_dataset("mnist-mini").test.images[:6]
    prepared = model.prepare_split(images, train=False, generator=torch.Generator().manual_seed(0))
    exact = exact_log_likelihood(model, model.binary_pixels(prepared))

    torch.manual_seed(1)
    estimates = latent_log_likelihood(model, prepared, iw_samples=20000, mc_samples=20000, batch_size=3)
    weighted = estimates["importance_weighted"].per_image
    prior = estimates["prior_monte_carlo"].per_image
    elbo = estimates["elbo"].per_image
    torch.testing.assert_close(weighted, exact, atol=0.05, rtol=0)
    torch.testing.assert_close(prior, exact, atol=0.05, rtol=0)
    assert (elbo <= weighted).all()  # Jensen, image by image
    assert (elbo < exact).all()


def test_importance_weighted_estimate_is_at_least_the_elbo_and_beats_prior_sampling_on_a_trained_shape():
    torch.manual_seed(0)
    model = create_model("vae", zdim=8, hidden=32)
    with torch.no_grad():
        model.decoder[-1].weight.normal_(0, 0.5)
    images = load_dataset("mnist-mini").test.images[:20]
    estimates = evaluate_images(model, images, seed=0, iw_samples=200, mc_samples=200)
    assert (estimates["importance_weighted"].per_image >= estimates["elbo"].per_image).all()
    summary = estimates["importance_weighted"].summary()
    assert summary["bits_per_dim"] == pytest.approx(bits_per_dim(summary["nats"]))
    assert 1 <= summary["mean_ess"] <= 200


def test_draws_are_taken_in_memory_bounded_chunks(monkeypatch):
    from dgm_cli import estimators as evaluate

    class Recorder:
        def __init__(self):
            self.chunks = []

        def log_weight_draws(self, batch, proposal, labels=None):
            def draws(k):
                self.chunks.append(k)
                return torch.zeros(len(batch), k)

            return draws

    monkeypatch.setattr(evaluate, "CHUNK_ELEMENTS", 784 * 4 * 300)  # 300 draws for a batch of 4
    recorder = Recorder()
    running = evaluate.weigh(recorder, torch.zeros(4, 28, 28, dtype=torch.uint8), 5000, "posterior")
    assert sum(recorder.chunks) == 5000 and max(recorder.chunks) == 300
    torch.testing.assert_close(running.log_mean(), torch.zeros(4, dtype=torch.float64))
    torch.testing.assert_close(running.effective_sample_size(), torch.full((4,), 5000.0, dtype=torch.float64))
