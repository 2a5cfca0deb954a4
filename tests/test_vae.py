"""The VAE's maths against independent references: torch.distributions, closed forms, mpmath."""

import math

import mpmath
import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from dgm_cli.models.vae import VAE, VAEConfig, bernoulli_log_likelihood, gaussian_kl, softplus
from dgm_cli.registry import create_model


def test_kl_matches_torch_distributions():
    torch.manual_seed(0)
    mean, logvar = torch.randn(64, 20, dtype=torch.float64) * 3, torch.randn(64, 20, dtype=torch.float64) * 2
    reference = kl_divergence(Normal(mean, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(gaussian_kl(mean, logvar), reference)


@pytest.mark.parametrize("mu, sigma", [(1e5, 1 + 1e5), (1e-5, 1 + 1e-5)])
def test_kl_seed_report_values(mu, sigma):
    """The seed's check: about 1e10 for huge parameters, about 1.5e-10 near the prior."""
    mpmath.mp.dps = 50
    exact = 0.5 * (mpmath.mpf(mu) ** 2 + mpmath.mpf(sigma) ** 2 - 1 - 2 * mpmath.log(mpmath.mpf(sigma)))
    logvar = torch.tensor([2 * math.log1p(sigma - 1)], dtype=torch.float64)
    value = gaussian_kl(torch.tensor([mu], dtype=torch.float64), logvar).item()
    assert value == pytest.approx(float(exact), rel=1e-6)
    assert value == pytest.approx(1e10 if mu > 1 else 1.5e-10, rel=1e-3)


def test_bernoulli_log_likelihood_matches_torch_distributions_even_for_extreme_logits():
    torch.manual_seed(0)
    logits = torch.randn(8, 784, dtype=torch.float64) * 5
    logits[0, :10] = torch.tensor([100.0, -100.0] * 5, dtype=torch.float64)
    x = torch.bernoulli(torch.full_like(logits, 0.5))
    reference = Bernoulli(logits=logits).log_prob(x).sum(-1)
    torch.testing.assert_close(bernoulli_log_likelihood(logits, x), reference)
    assert torch.isfinite(bernoulli_log_likelihood(logits.float() * 1e3, x.float())).all()


def test_softplus_matches_torch_in_double_precision_and_its_gradient_is_the_sigmoid_everywhere():
    logits = torch.cat(
        [torch.linspace(-120, 120, 20_001, dtype=torch.float64), torch.tensor([0.0, -0.0, 1e-30, -1e-30])]
    )
    reference = torch.nn.functional.softplus(logits, threshold=1e9)  # log1p(exp(l)) everywhere, in float64
    torch.testing.assert_close(softplus(logits), reference, rtol=1e-15, atol=1e-15)
    # float32: within 1.5e-7 of the float64 value of the same float32 inputs (relative above 1), about an ulp
    single = logits.float()
    error = (softplus(single).double() - torch.nn.functional.softplus(single.double(), threshold=1e9)).abs()
    assert (error / torch.nn.functional.softplus(single.double()).clamp(min=1)).max() < 1.5e-7
    leaf = logits.clone().requires_grad_()
    softplus(leaf).sum().backward()
    torch.testing.assert_close(leaf.grad, torch.sigmoid(logits), rtol=0, atol=0)
    assert leaf.grad[-4:].tolist() == pytest.approx([0.5] * 4)  # the kink of max(l, 0) and |l| does not show
    torch.autograd.gradcheck(softplus, (torch.randn(50, dtype=torch.float64, requires_grad=True) * 10,))


def test_elbo_at_initialisation_is_minus_784_ln_2_minus_kl():
    torch.manual_seed(0)
    model = create_model("vae")
    images = (torch.rand(256, 28, 28) * 255).to(torch.uint8)
    with torch.no_grad():
        x = model.binary_pixels(images)
        terms = model.elbo(x)
    torch.testing.assert_close(terms["reconstruction"], torch.full((256,), -784 * math.log(2)))
    torch.testing.assert_close(terms["elbo"], terms["reconstruction"] - terms["kl"])
    assert terms["elbo"].mean().item() == pytest.approx(-543.4, abs=0.5)


def test_training_step_loss_is_the_negative_mean_elbo_and_has_gradients():
    torch.manual_seed(0)
    model = create_model("vae", zdim=3, hidden=16)
    batch = (torch.rand(32, 28, 28) * 255).to(torch.uint8)
    out = model.training_step(batch)
    assert out["loss"].item() == pytest.approx(-out["elbo"].item())
    out["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())


def test_sampling_is_deterministic_for_a_seed_and_in_range():
    model = create_model("vae", zdim=4, hidden=16)
    with torch.no_grad():
        model.decoder[-1].weight.normal_()
    first = model.sample(9, generator=torch.Generator().manual_seed(3))
    again = model.sample(9, generator=torch.Generator().manual_seed(3))
    other = model.sample(9, generator=torch.Generator().manual_seed(4))
    assert first.shape == (9, 1, 28, 28)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert first.min() >= 0 and first.max() <= 1


def test_manifold_places_latents_on_normal_quantiles():
    model = create_model("vae", zdim=2, hidden=8)
    seen = []
    original = model.decode_images
    model.decode_images = lambda z, labels=None: (seen.append(z), original(z, labels))[1]
    images = model.manifold(5, edge=0.05)
    assert images.shape == (25, 1, 28, 28)
    z = seen[0].view(5, 5, 2)
    low, high = Normal(0.0, 1.0).icdf(torch.tensor(0.05)).item(), Normal(0.0, 1.0).icdf(torch.tensor(0.95)).item()
    # Top-left is (low z1, high z2): z1 grows to the right, z2 grows upwards.
    assert z[0, 0].tolist() == pytest.approx([low, high], abs=1e-6)
    assert z[-1, -1].tolist() == pytest.approx([high, low], abs=1e-6)
    assert z[2, 2].tolist() == pytest.approx([0.0, 0.0], abs=1e-6)


def test_static_binarization_is_seeded_and_dynamic_leaves_training_images_alone():
    images = (torch.rand(100, 28, 28) * 255).to(torch.uint8)
    static = VAE(VAEConfig(binarize="static", hidden=4, zdim=1))
    first = static.prepare_split(images, train=True, generator=torch.Generator().manual_seed(1))
    again = static.prepare_split(images, train=True, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, again)
    assert set(first.unique().tolist()) <= {0, 255}
    assert (first.float() / 255).mean().item() == pytest.approx((images.float() / 255).mean().item(), abs=0.01)
    # A 0/255 image makes the per-batch Bernoulli draw deterministic.
    assert torch.equal(VAE(VAEConfig()).binary_pixels(first), first.flatten(1).float() / 255)
    dynamic = VAE(VAEConfig(binarize="dynamic", hidden=4, zdim=1))
    assert dynamic.prepare_split(images, train=True, generator=torch.Generator()) is images


def test_binary_pixels_are_one_with_probability_intensity_over_255():
    from dgm_cli.models.vae import VAE

    levels = torch.tensor([0, 1, 51, 128, 254, 255], dtype=torch.uint8)
    draws = VAE(VAEConfig()).binary_pixels(levels.view(1, 6, 1).expand(20_000, 6, 1).contiguous()).view(20_000, 6)
    assert draws[:, 0].max() == 0 and draws[:, -1].min() == 1  # black never, white always
    frequency = draws.mean(0).double()
    expected = levels.double() / 255
    # four standard errors of a Bernoulli mean over 20,000 draws
    assert ((frequency - expected).abs() <= 4 * (expected * (1 - expected) / 20_000).sqrt() + 1e-12).all()
