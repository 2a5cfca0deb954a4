"""The IWAE paper's VAEs: the k-sample bound, two stochastic layers, the schedule and the presets.

Checked against independent computations: torch.distributions for every density, a Python loop over
the k draws for the batched pass, closed forms for the schedule's stages.
"""

import math

import pytest
import torch
from torch.distributions import Bernoulli, Independent, Normal

from dgm_cli.checkpoint import load_checkpoint, save_checkpoint
from dgm_cli.models.schedules import IWAE_EPOCHS, iwae_stage, learning_rate_factor
from dgm_cli.models.vae import PRESETS, gaussian_kl
from dgm_cli.registry import create_config, create_model, get_spec

TWO = dict(stochastic_layers=2, hidden_layers=2, hidden=16, zdim=6, hidden2=8, zdim2=3, activation="tanh")


def trained_a_little(model):
    """Weights away from their zero start, so every term of the bound matters."""
    torch.manual_seed(1)
    for parameter in model.parameters():
        parameter.data.normal_(0, 0.3)
    return model


def binary_images(n: int = 64) -> torch.Tensor:
    return (torch.rand(n, 28, 28, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)


def gaussian(mean_logvar: torch.Tensor) -> Independent:
    mean, logvar = mean_logvar.chunk(2, dim=-1)
    return Independent(Normal(mean, torch.exp(0.5 * logvar)), 1)


def test_iwae_at_k_1_is_the_elbo_of_the_same_draw():
    model = trained_a_little(create_model("vae", **{**TWO, "stochastic_layers": 1}, objective="iwae", k=1)).double()
    x = (binary_images().flatten(1) > 127).double()
    torch.manual_seed(5)
    bound = model.training_bound(x)["bound"]
    torch.manual_seed(5)
    terms = model.log_weight_terms(x, 1)
    torch.manual_seed(5)
    elbo = model.training_bound(x)["elbo"]  # the mean of log w over its one draw
    assert torch.equal(bound, (terms[0] + terms[1] - terms[2])[:, 0]) and torch.equal(bound, elbo)
    # ... whose KL part is, in expectation, the closed-form KL that the ELBO objective uses
    with torch.no_grad():
        _, log_prior, log_q = model.log_weight_terms(x[:16], 1000)
        mean, logvar = model.posterior_parameters(x[:16])
    sampled, error = (log_q - log_prior).mean(1), (log_q - log_prior).std(1) / math.sqrt(1000)
    assert ((sampled - gaussian_kl(mean, logvar)).abs() < 4 * error).all()


@pytest.mark.parametrize("layers", [1, 2])
def test_the_batched_log_weights_match_torch_distributions_draw_by_draw(layers):
    model = trained_a_little(create_model("vae", **{**TWO, "stochastic_layers": layers})).double()
    x = (binary_images(8).flatten(1) > 127).double()
    torch.manual_seed(2)
    reconstruction, log_prior, log_q = model.log_weight_terms(x, 7)
    torch.manual_seed(2)  # the same draws, one at a time, scored by torch.distributions
    eps1 = torch.randn(8, 7, model.config.zdim).double()  # the model draws in float32
    eps2 = torch.randn(8, 7, model.config.zdim2).double() if layers == 2 else None
    q1 = gaussian(model.encoder(x))
    for i in range(7):
        z1 = q1.mean + q1.stddev * eps1[:, i]
        expected_q, expected_prior = q1.log_prob(z1), None
        if layers == 2:
            q2 = gaussian(model.encoder_top(z1))
            z2 = q2.mean + q2.stddev * eps2[:, i]
            expected_q = expected_q + q2.log_prob(z2)
            expected_prior = Independent(Normal(0.0, torch.ones_like(z2)), 1).log_prob(z2) + gaussian(
                model.decoder_top(z2)
            ).log_prob(z1)
        else:
            expected_prior = Independent(Normal(0.0, torch.ones_like(z1)), 1).log_prob(z1)
        expected_x = Independent(Bernoulli(logits=model.decoder(z1)), 1).log_prob(x)
        torch.testing.assert_close(reconstruction[:, i], expected_x)
        torch.testing.assert_close(log_prior[:, i], expected_prior)
        torch.testing.assert_close(log_q[:, i], expected_q)


def test_the_two_layer_elbo_is_log_p_minus_log_q_of_one_draw():
    model = trained_a_little(create_model("vae", **TWO)).double()
    x = (binary_images(16).flatten(1) > 127).double()
    torch.manual_seed(4)
    terms = model.elbo(x)
    torch.manual_seed(4)
    reconstruction, log_prior, log_q = model.log_weight_terms(x, 1)
    torch.testing.assert_close(terms["elbo"], (reconstruction + log_prior - log_q)[:, 0])
    torch.testing.assert_close(terms["kl"], (log_q - log_prior)[:, 0])


@pytest.mark.parametrize("layers", [1, 2])
def test_the_k_sample_bound_does_not_decrease_with_k(layers):
    model = trained_a_little(create_model("vae", **{**TWO, "stochastic_layers": layers}))
    images = binary_images(200)
    bounds = []
    with torch.no_grad():
        for k in (1, 5, 50, 200):
            torch.manual_seed(0)
            bounds.append(
                torch.logsumexp(model.log_weights(images, k, proposal="posterior"), 1).sub(math.log(k)).mean().item()
            )
    assert bounds == sorted(bounds) and bounds[-1] > bounds[0] + 1.0, bounds


def test_prior_sampling_of_two_layers_goes_through_p_z1_given_z2():
    model = trained_a_little(create_model("vae", **TWO))
    torch.manual_seed(0)
    with torch.no_grad():
        weights = model.log_weights(binary_images(4), 3, proposal="prior")
        torch.manual_seed(0)
        x = model.binary_pixels(binary_images(4))
        z2 = torch.randn(4, 3, 3)
        p1 = gaussian(model.decoder_top(z2))
        z1 = p1.mean + p1.stddev * torch.randn(4, 3, 6)
        expected = Independent(Bernoulli(logits=model.decoder(z1)), 1).log_prob(x[:, None].expand(-1, 3, -1))
    torch.testing.assert_close(weights, expected)


def test_the_untrained_two_layer_model_starts_at_the_uniform_bernoulli():
    model = create_model("vae", **TWO)
    x = (binary_images(32).flatten(1) > 127).float()
    with torch.no_grad():
        terms = model.elbo(x)
    torch.testing.assert_close(terms["reconstruction"], torch.full((32,), -784 * math.log(2)))


def test_the_iwae_schedule_steps_at_the_papers_stage_boundaries():
    boundaries = [(3**i - 1) // 2 for i in range(8)]  # epochs 0, 1, 4, 13, 40, 121, 364, 1093 of 3,280
    assert IWAE_EPOCHS == 3280
    for stage, start in enumerate(boundaries):
        assert iwae_stage(start / IWAE_EPOCHS) == stage
        if start > 0:
            assert iwae_stage((start - 1e-6) / IWAE_EPOCHS) == stage - 1
        assert learning_rate_factor("iwae", start / IWAE_EPOCHS) == pytest.approx(10 ** (-stage / 7))
    assert learning_rate_factor("iwae", 0.999999) == pytest.approx(0.1)  # 1e-3 -> 1e-4 at the end
    assert learning_rate_factor("constant", 0.5) == 1.0 and learning_rate_factor("cosine", 1.0) == pytest.approx(0.0)


@pytest.mark.parametrize("name", list(PRESETS))
def test_each_preset_builds_trains_a_step_and_round_trips_through_a_checkpoint(name, tmp_path):
    preset = PRESETS[name]
    config = create_config("vae", preset=name)
    assert config.preset == name and all(
        getattr(config, key) == value for key, value in preset.overrides.items() if key != "preset"
    )
    assert create_config("vae", preset=name, epochs=3).epochs == 3  # options beside a preset still apply
    model = get_spec("vae").module_class(config)
    [optimizer] = model.configure_optimizers()
    assert optimizer.defaults["eps"] == 1e-4
    loss = model.training_step(binary_images(20))["loss"]
    loss.backward()
    optimizer.step()
    assert math.isfinite(loss.item())
    save_checkpoint(tmp_path / "p.safetensors", model, model_name="vae", config=config, data={}, train={})
    loaded, info = load_checkpoint(tmp_path / "p.safetensors")
    assert info.config == config
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_an_unknown_preset_names_the_known_ones():
    from dgm_cli.errors import DgmError

    with pytest.raises(DgmError, match="iwae-1l-vae"):
        create_config("gan", preset="iwae-1l-vae")


def test_adam_beta1_is_the_decay_of_the_running_mean_of_gradients():
    """Two Adam steps with constant gradients g1, g2 against the closed form of Adam's update with beta1 = 0.99."""
    model = create_model("vae", zdim=2, hidden=4, adam_beta1=0.99, adam_eps=1e-4, lr=1e-3)
    [optimizer] = model.configure_optimizers()
    parameter = model.decoder[-1].bias
    before = parameter.detach().clone()
    beta1, beta2, lr, eps = 0.99, 0.999, 1e-3, 1e-4
    m = v = 0.0
    expected = before.clone()
    for step, g in enumerate((0.5, -0.2), start=1):
        for other in model.parameters():
            other.grad = torch.zeros_like(other)
        parameter.grad = torch.full_like(parameter, g)
        optimizer.step()
        m, v = beta1 * m + (1 - beta1) * g, beta2 * v + (1 - beta2) * g * g
        expected -= lr * (m / (1 - beta1**step)) / (math.sqrt(v / (1 - beta2**step)) + eps)
    assert torch.allclose(parameter.detach(), expected, rtol=0, atol=1e-7)
    assert create_model("vae").config.adam_beta1 == 0.9  # the default, and what checkpoints from before it had


@pytest.mark.parametrize("init", ["glorot", "paper"])
@pytest.mark.parametrize("layers", [1, 2])
def test_the_papers_initialization_is_glorot_uniform_with_zero_biases(layers, init):
    """Before the data: 'paper' sets its output bias from the training images later (initialize_from_data)."""
    config = dict(TWO, zdim=50, hidden=200) if layers == 2 else dict(hidden_layers=2, hidden=200, zdim=50)
    torch.manual_seed(0)
    model = create_model("vae", init=init, **config)
    heads = {id(model.encoder[-1])} | ({id(model.encoder_top[-1]), id(model.decoder_top[-1])} if layers == 2 else set())
    for module in model.modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        assert torch.count_nonzero(module.bias) == 0
        if id(module) in heads:  # mean half as a head of its own; log-variance = 2 log sigma, twice the scale
            half = module.out_features // 2
            bound = math.sqrt(6 / (module.in_features + half))
            parts = [(module.weight[:half], bound), (module.weight[half:], 2 * bound)]
        else:
            parts = [(module.weight, math.sqrt(6 / (module.in_features + module.out_features)))]
        for weights, bound in parts:  # uniform on [-bound, bound]: inside it, reaching its edges, variance bound^2/3
            assert weights.abs().max() <= bound and weights.abs().max() > 0.95 * bound
            assert weights.var().item() == pytest.approx(bound**2 / 3, rel=0.15)


def test_the_papers_output_bias_is_the_logit_of_the_mean_training_image():
    images = binary_images(64)
    model = create_model("vae", init="paper", zdim=2, hidden=8)
    model.initialize_from_data(images)
    mean = (images.double() / 255).mean(0).flatten().clamp(0.001, 0.999)
    assert torch.allclose(model.decoder[-1].bias.double(), -torch.log(1 / mean - 1), atol=1e-5)
    default = create_model("vae", zdim=2, hidden=8)  # PyTorch's start: the uniform Bernoulli, and no data in it
    default.initialize_from_data(images)
    assert torch.count_nonzero(default.decoder[-1].weight) == 0 and torch.count_nonzero(default.decoder[-1].bias) == 0
    glorot = create_model("vae", init="glorot", zdim=2, hidden=8)  # the paper's weights without the data's bias
    glorot.initialize_from_data(images)
    assert torch.count_nonzero(glorot.decoder[-1].weight) > 0 and torch.count_nonzero(glorot.decoder[-1].bias) == 0
