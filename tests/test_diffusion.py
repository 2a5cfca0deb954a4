"""The diffusion model against closed forms and direct computations: the forward process, the bound's terms
(torch.distributions), DDIM, the discretized decoder; and every command through the CLI on mnist-mini."""

import json
import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence
from typer.testing import CliRunner

from dgm_cli.checkpoint import load_checkpoint, save_checkpoint
from dgm_cli.cli import app
from dgm_cli.estimators import timestep_bound
from dgm_cli.models.diffusion import Diffusion, DiffusionConfig, discretized_log_likelihood, make_betas

runner = CliRunner()


def tiny(**overrides) -> Diffusion:
    torch.manual_seed(0)
    model = Diffusion(DiffusionConfig(width=4, timesteps=10, sample_steps=10, **overrides)).eval()
    for parameter in model.net.parameters():  # the zero-initialised layers would make eps_theta = 0
        parameter.data.normal_(0, 0.1)
    model.net_ema.load_state_dict(model.net.state_dict())
    return model


def images(count: int = 4) -> torch.Tensor:
    return torch.randint(0, 256, (count, 28, 28), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_the_closed_form_marginal_equals_repeated_single_steps(schedule):
    """q(x_t | x0) = N(sqrt(abar_t) x0, 1 - abar_t): mean and variance composed step by step, and a Monte-Carlo run
    of the single steps against the model's one-shot draw."""
    model = Diffusion(DiffusionConfig(width=4, timesteps=50, schedule=schedule))
    betas = make_betas(schedule, 50)
    scale, variance = 1.0, 0.0  # x_t = scale * x0 + noise of this variance
    for t in range(1, 51):
        alpha = 1 - betas[t - 1].item()
        scale, variance = math.sqrt(alpha) * scale, alpha * variance + betas[t - 1].item()
        assert scale == pytest.approx(model.alphas_bar[t].sqrt().item(), rel=1e-9)
        assert variance == pytest.approx(1 - model.alphas_bar[t].item(), rel=1e-9)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.full((20_000, 1, 1, 1), 0.7, dtype=torch.float64)
    x = x0.clone()
    for t in range(1, 31):
        x = (1 - betas[t - 1]).sqrt() * x + betas[t - 1].sqrt() * torch.randn(
            x.shape, generator=generator, dtype=torch.float64
        )
    one_shot = model.noisy(x0.float(), torch.full((20_000,), 30), torch.randn(x.shape, generator=generator))
    assert x.mean().item() == pytest.approx(one_shot.mean().item(), abs=0.03)
    assert x.std().item() == pytest.approx(one_shot.std().item(), rel=0.03)


def test_the_bound_terms_against_torch_distributions():
    model, batch = tiny(), images()
    x0 = batch.double().view(-1, 1, 28, 28) / 127.5 - 1
    abar_T = model.alphas_bar[-1]
    prior = kl_divergence(Normal(abar_T.sqrt() * x0, (1 - abar_T).sqrt()), Normal(0.0, 1.0)).flatten(1).sum(1)
    assert torch.allclose(model.prior_term(batch), prior, rtol=1e-9)

    eps = torch.randn(len(batch), 1, 28, 28, generator=torch.Generator().manual_seed(2))
    for step in (1, 2, 5, 10):
        t = torch.full((len(batch),), step)
        term = model.timestep_term(batch, t, eps)
        # Ho et al. eq. 11 for the model's mean, eq. 6-7 for the posterior: written out here, not taken from the model.
        beta, abar = model.betas[step].item(), model.alphas_bar[step].item()
        abar_prev = model.alphas_bar[step - 1].item()
        xt = (math.sqrt(abar) * x0 + math.sqrt(1 - abar) * eps.double()).float()
        predicted = model.net_ema(xt, t).double()
        model_mean = (xt.double() - beta / math.sqrt(1 - abar) * predicted) / math.sqrt(1 - beta)
        if step == 1:
            bins = Normal(model_mean, math.sqrt(beta))
            upper = torch.where(x0 > 0.999, torch.tensor(math.inf, dtype=torch.float64), x0 + 1 / 255)
            lower = torch.where(x0 < -0.999, torch.tensor(-math.inf, dtype=torch.float64), x0 - 1 / 255)
            expected = -torch.log(bins.cdf(upper) - bins.cdf(lower)).flatten(1).sum(1)
            assert torch.allclose(term, expected, rtol=1e-4)
        else:
            posterior_mean = (math.sqrt(abar_prev) * beta / (1 - abar)) * x0 + (
                math.sqrt(1 - beta) * (1 - abar_prev) / (1 - abar)
            ) * xt.double()
            std = math.sqrt((1 - abar_prev) / (1 - abar) * beta)
            expected = kl_divergence(Normal(posterior_mean, std), Normal(model_mean, std)).flatten(1).sum(1)
            assert torch.allclose(term, expected, rtol=1e-4)


def test_ddim_with_one_step_of_the_schedule_and_eta_1_is_the_posterior_mean_and_variance():
    """With consecutive steps and eta = 1, DDIM's step is the ancestral one: given the true noise, its mean is
    the forward posterior's mean mu~(x_t, x0) and its noise the posterior's standard deviation."""
    model = tiny()
    x0 = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 2 - 1
    eps = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for step in (2, 6, 10):
        t = torch.full((3,), step)
        # x_t built here in float64 (model.noisy rounds its coefficients to float32, as training does), so the
        # identity is checked to float64 precision rather than to float32 rounding amplified by 1 / sqrt(abar)
        abar = model.alphas_bar[step].item()
        xt = abar**0.5 * x0 + (1 - abar) ** 0.5 * eps
        mean = model.ddim_step(xt, step, step - 1, eps, eta=1.0, clip=False)
        posterior_mean, posterior_variance = model.posterior(x0, xt, t)
        torch.testing.assert_close(mean, posterior_mean, atol=1e-10, rtol=0)
        unit_noise = model.ddim_step(xt, step, step - 1, eps, eta=1.0, noise=torch.ones_like(xt), clip=False)
        torch.testing.assert_close(unit_noise - mean, posterior_variance.sqrt().expand_as(mean), atol=1e-10, rtol=0)


def test_ddim_with_eta_1_between_distant_steps_is_the_forward_process_posterior_between_them():
    """The respaced ancestral sampler (--eta 1 on fewer steps): from x_t to x_s, s < t, given the true noise,
    its mean and noise are those of q(x_s | x_t, x0) in closed form, with abar_t|s = abar_t / abar_s."""
    model = tiny()
    x0 = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 2 - 1
    eps = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    for t, s in ((4, 1), (4, 2), (3, 1)):  # where abar_t is not so small that x0 from x_t loses float64 digits
        abar_t, abar_s = model.alphas_bar[t].item(), model.alphas_bar[s].item()
        xt = abar_t**0.5 * x0 + (1 - abar_t) ** 0.5 * eps
        beta_ts = 1 - abar_t / abar_s
        mean = abar_s**0.5 * beta_ts / (1 - abar_t) * x0 + (abar_t / abar_s) ** 0.5 * (1 - abar_s) / (1 - abar_t) * xt
        std = ((1 - abar_s) / (1 - abar_t) * beta_ts) ** 0.5
        step_mean = model.ddim_step(xt, t, s, eps, eta=1.0, clip=False)
        torch.testing.assert_close(step_mean, mean, atol=1e-10, rtol=0)
        unit_noise = model.ddim_step(xt, t, s, eps, eta=1.0, noise=torch.ones_like(xt), clip=False)
        torch.testing.assert_close(unit_noise - step_mean, torch.full_like(mean, std), atol=1e-10, rtol=0)


def test_the_discretized_decoder_sums_to_one_over_the_256_values():
    values = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    for mean, std in ((0.0, 0.01), (0.93, 0.05), (-1.2, 0.3), (0.5, 2.0)):
        probabilities = discretized_log_likelihood(values, torch.full_like(values, mean), torch.tensor(std)).exp()
        assert probabilities.sum().item() == pytest.approx(1.0, abs=1e-9)


def test_the_sampled_timestep_bound_is_unbiased_for_the_sum_of_all_terms():
    """T times the mean of K uniformly drawn terms against all T terms: equal in expectation, so over 20 seeds
    each their means differ by no more than noise (4 standard errors of the difference)."""
    model, batch = tiny(), images(2)
    every = torch.stack(
        [timestep_bound(model, batch, seed=s, timesteps=10)["variational_bound"].per_image for s in range(20)]
    )
    sampled = torch.stack(
        [timestep_bound(model, batch, seed=100 + s, timesteps=5)["variational_bound"].per_image for s in range(20)]
    )
    difference = sampled.mean(0) - every.mean(0)
    error = (sampled.var(0) / 20 + every.var(0) / 20).sqrt()
    assert (difference.abs() < 4 * error).all(), (difference, error)
    assert (sampled.std(0) > every.std(0)).all()  # drawing t adds its own variance, which the s.e. then carries
    fewest = timestep_bound(model, batch, seed=0, timesteps=1)["variational_bound"]
    assert "t = 1 and 1 stratified" in fewest.label  # K = 1: still one draw from 2..T, not the decoder alone


def test_ddim_encoding_inverts_decoding_for_a_model_that_predicts_no_noise():
    """An untrained network predicts eps = 0 (its last layer is zero), so DDIM maps x0 <-> sqrt(abar_T) x0 exactly."""
    model = Diffusion(DiffusionConfig(width=4, timesteps=20, sample_steps=7)).eval()
    batch = images(2)
    latents = model.encode_images(batch)
    assert torch.allclose(
        latents, model.alphas_bar[-1].sqrt().float() * (batch.float().flatten(1) / 127.5 - 1), atol=1e-5
    )
    assert torch.allclose(model.decode_images(latents).flatten(1) * 255, batch.float().flatten(1), atol=1e-3)


def test_checkpoint_round_trip_samples_the_same(tmp_path):
    model = tiny()
    save_checkpoint(tmp_path / "d.safetensors", model, model_name="diffusion", config=model.config, data={}, train={})
    loaded, _ = load_checkpoint(tmp_path / "d.safetensors")
    for sampler in ("ddim", "ancestral"):
        first = model.sample(3, generator=torch.Generator().manual_seed(5), sampler=sampler)
        second = loaded.sample(3, generator=torch.Generator().manual_seed(5), sampler=sampler)
        assert torch.equal(first, second) and first.min() >= 0 and first.max() <= 1


def test_train_sample_eval_interpolate_through_the_cli(tmp_path):
    small = [
        "--width",
        "4",
        "--timesteps",
        "20",
        "--sample-steps",
        "4",
        "--epochs",
        "1",
        "--batch-size",
        "500",
        "--dataset",
        "mnist-mini",
        "--sample-epochs",
        "1",
        "--checkpoint-dir",
        str(tmp_path / "ck"),
    ]
    result = runner.invoke(app, ["train", "diffusion", *small, "--out", "runs/d"])
    assert result.exit_code == 0, result.output
    history = [json.loads(line) for line in open("runs/d/metrics.jsonl")]
    assert history[0]["val_noise_mse"] == pytest.approx(1.0, abs=0.05)  # an untrained model predicts no noise
    result = runner.invoke(app, ["sample", "diffusion", "runs/d", "-n", "8", "--steps", "3", "--out", "s.png"])
    assert result.exit_code == 0 and "ddim 3 steps" in result.stderr, result.output
    result = runner.invoke(
        app, ["sample", "diffusion", "runs/d", "-n", "2", "--sampler", "ancestral", "--out", "a.png"]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app, ["sample", "diffusion", "runs/d", "-n", "2", "--steps", "3", "--eta", "1", "--out", "e.png"]
    )
    assert result.exit_code == 0 and "ddim 3 steps, eta 1" in result.stderr, result.output
    result = runner.invoke(app, ["sample", "diffusion", "runs/d", "--sampler", "ancestral", "--eta", "0.5"])
    assert result.exit_code == 1 and "--eta sets DDIM's noise" in result.stderr
    result = runner.invoke(app, ["sample", "diffusion", "runs/d", "--steps", "21"])
    assert result.exit_code == 1 and "not between 1 and the model's 20 diffusion steps" in result.stderr
    result = runner.invoke(app, ["sample", "diffusion", "runs/d", "--guidance", "2"])
    assert result.exit_code == 1 and "needs a conditional model" in result.stderr
    result = runner.invoke(
        app,
        [
            "eval",
            "diffusion",
            "runs/d",
            "--limit",
            "20",
            "--bound-timesteps",
            "20",
            "--samples",
            "40",
            "--steps",
            "2",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    bound = report["likelihood"]["variational_bound"]
    assert "all 20 terms" in bound["label"] and bound["bits_per_dim"] > 0
    assert report["sample_quality"]["sampler"] == {"sampler": "ddim", "steps": 2, "eta": 0.0, "guidance": 0.0}
    result = runner.invoke(
        app,
        [
            "interpolate",
            "diffusion",
            "runs/d",
            "--from-images",
            "--denoising-steps",
            "2",
            "--steps",
            "3",
            "--out",
            "i.png",
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["sample", "vae", "--steps", "5"])  # the pretrained VAE
    assert result.exit_code == 1 and "draws in one pass" in result.stderr


def test_a_conditional_model_samples_a_class_with_guidance(tmp_path):
    small = [
        "--width",
        "4",
        "--timesteps",
        "10",
        "--sample-steps",
        "2",
        "--epochs",
        "1",
        "--batch-size",
        "1000",
        "--dataset",
        "mnist-mini",
        "--sample-epochs",
        "",
        "--conditional",
        "--checkpoint-dir",
        str(tmp_path),
    ]
    result = runner.invoke(app, ["train", "diffusion", *small, "--out", "runs/c"])
    assert result.exit_code == 0, result.output
    model = tiny(conditional=True)  # random weights, so that the label embedding matters from the start
    three = model.sample(4, generator=torch.Generator().manual_seed(0), labels=torch.full((4,), 3), guidance=2.0)
    seven = model.sample(4, generator=torch.Generator().manual_seed(0), labels=torch.full((4,), 7), guidance=2.0)
    assert not torch.equal(three, seven)  # the label changes what the same noise becomes
    result = runner.invoke(app, ["sample", "diffusion", "runs/c", "--label", "3", "--guidance", "2", "-n", "4"])
    assert result.exit_code == 0 and "guidance 2" in result.stderr, result.output
