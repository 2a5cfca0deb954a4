"""The flows: invertibility, log-determinants against brute-force Jacobians, closed forms of the untrained model."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import AffineTransform, Independent, Normal, SigmoidTransform, TransformedDistribution

from dgm_cli.checkpoint import load_checkpoint, save_checkpoint
from dgm_cli.data import PIXELS, load_dataset
from dgm_cli.estimators import dequantized_log_likelihood
from dgm_cli.models.conditioning import label_maps, one_hot
from dgm_cli.models.coupling_nets import coupling_net
from dgm_cli.models.dequantization import MARGIN, VariationalDequantization
from dgm_cli.models.flow import MLPCoupling, checkerboard_order, to_logit_space
from dgm_cli.models.flow_layers import (
    ActNorm,
    CheckerboardCoupling,
    ConvCoupling,
    InvertibleConv1x1,
    SplitPrior,
    checkerboard_mask,
    run_network,
    squeeze,
    unsqueeze,
)
from dgm_cli.registry import create_model

# Small versions of each architecture; "realnvp-ms-full" has every option of the multi-scale flow on:
# checkerboard couplings before the first squeeze, gated coupling networks, its own width and depth at 8x7x7,
# and variational dequantization.
SMALL = {
    "realnvp-mlp": {"arch": "realnvp-mlp", "hidden": 16, "couplings": 4},
    "realnvp-conv": {
        "arch": "realnvp-conv",
        "couplings": 2,
        "checkerboard_channels": 4,
        "coupling_net": "gated",
        "gated_blocks": 1,
    },
    "realnvp-ms": {"arch": "realnvp-ms", "channels": 8, "steps": 2},
    "realnvp-ms-full": {
        "arch": "realnvp-ms",
        "checkerboard_steps": 2,
        "checkerboard_channels": 4,
        "channels": 6,
        "steps": 1,
        "final_steps": 2,
        "final_channels": 8,
        "coupling_net": "gated",
        "gated_blocks": 1,
        "dequantization": "variational",
        "dequantization_steps": 2,
        "dequantization_channels": 4,
    },
}
ARCHS = tuple(SMALL)
ALPHA = 1e-5


def perturbed(module: torch.nn.Module, scale: float = 0.1, seed: int = 0) -> torch.nn.Module:
    """Move every parameter off its initial value, so no layer is the identity its zero init makes it."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return module


def small_flow(arch: str, *, trained_look: bool = True):
    torch.manual_seed(0)
    model = create_model("flow", **SMALL[arch])
    if trained_look:
        perturbed(model)
        for layer in model.modules():
            if isinstance(layer, ActNorm):
                layer.initialized.fill_(1)
    return model.eval()


def brute_force_logdet(function, x: torch.Tensor) -> torch.Tensor:
    """log |det J| of a map of one flat vector, from autograd's full Jacobian (float64)."""
    jacobian = torch.func.jacrev(function)(x)
    return torch.linalg.slogdet(jacobian.reshape(x.numel(), -1))[1]


def images(count: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (count, 28, 28), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


# ---------------------------------------------------------------- invertibility


@pytest.mark.parametrize("arch", ARCHS)
def test_image_to_latent_to_image_round_trip_in_float32(arch):
    model = small_flow(arch)
    z0, _ = to_logit_space(model.dequantize(images(8))[0], ALPHA)
    z, _ = model.body(z0)
    assert z.shape == (8, PIXELS)
    # float32 round-off through every layer (each affine scale exp(s) amplifies it) grows with the value, which
    # in logit space reaches |11|: the relative part of the tolerance. It differs between CPUs (1.25e-4 at a
    # value of 4 on an AMD EPYC, under 1e-4 on an Intel Xeon); exactness itself is checked in float64 below.
    torch.testing.assert_close(model.body.inverse(z), z0, atol=1e-4, rtol=1e-4)
    # and the other way: a latent through the inverse and back
    latent = torch.randn(8, PIXELS, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(model.body(model.body.inverse(latent))[0], latent, atol=1e-4, rtol=1e-4)


def test_pixels_come_back_from_the_logit_space():
    from dgm_cli.models.flow import from_logit_space

    w = torch.rand(3, PIXELS, dtype=torch.float64) * 256
    torch.testing.assert_close(from_logit_space(to_logit_space(w, ALPHA)[0], ALPHA) * 256, w)


def test_squeeze_is_a_permutation_with_an_inverse():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(2, 3, 4, 6)
    squeezed = squeeze(x)
    assert squeezed.shape == (2, 12, 2, 3)
    assert torch.equal(squeezed.flatten().sort().values, x.flatten())
    assert torch.equal(unsqueeze(squeezed), x)
    # each 2x2 patch becomes the four channels of one position
    assert squeezed[0, :4, 0, 0].tolist() == [x[0, 0, 0, 0], x[0, 0, 0, 1], x[0, 0, 1, 0], x[0, 0, 1, 1]]


def test_checkerboard_halves_alternate_like_a_board():
    order = checkerboard_order(28, 28)
    assert sorted(order.tolist()) == list(range(PIXELS))
    first = set(order[: PIXELS // 2].tolist())
    assert 0 in first and 1 not in first and 28 not in first and 29 in first


# ---------------------------------------------------------------- log-determinants, layer by layer


def layer_cases():
    torch.manual_seed(0)
    cases = {}
    coupling = perturbed(MLPCoupling(5, 7, hidden=6)).double()
    cases["mlp coupling"] = (
        lambda v: torch.cat([v[:5], coupling(v[None, :5], v[None, 5:])[0][0]]),
        lambda v: coupling(v[None, :5], v[None, 5:])[1][0],
        12,
    )
    shape = (4, 3, 3)
    for name, layer in {
        "actnorm": perturbed(ActNorm(4)),
        "1x1 convolution": perturbed(InvertibleConv1x1(4)),
        "conv coupling": perturbed(ConvCoupling(4, hidden=5)),
        "gated conv coupling": perturbed(ConvCoupling(4, hidden=5, net="gated", blocks=1)),
        "checkerboard coupling": perturbed(CheckerboardCoupling(4, 5, parity=0, net="simple", height=3, width=3)),
        "gated checkerboard coupling": perturbed(
            CheckerboardCoupling(4, 5, parity=1, net="gated", blocks=2, height=3, width=3)
        ),
    }.items():
        layer = layer.double().eval()
        if isinstance(layer, ActNorm):
            layer.initialized.fill_(1)
        cases[name] = (
            lambda v, layer=layer: layer(v.view(1, *shape))[0].flatten(),
            lambda v, layer=layer: layer(v.view(1, *shape))[1][0],
            36,
        )
    split = perturbed(SplitPrior(4, hidden=5)).double()

    def split_map(v):
        kept, eps, _ = split(v.view(1, *shape))
        return torch.cat([kept.flatten(), eps.flatten()])

    cases["split prior"] = (split_map, lambda v: split(v.view(1, *shape))[2][0], 36)
    conditioned = perturbed(CheckerboardCoupling(4, 5, parity=0, net="gated", blocks=1, context=2, height=3, width=3))
    conditioned = conditioned.double()
    context = torch.randn(1, 2, 3, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    cases["checkerboard coupling with a context"] = (
        lambda v: conditioned(v.view(1, *shape), context)[0].flatten(),
        lambda v: conditioned(v.view(1, *shape), context)[1][0],
        36,
    )
    cases["logit preprocessing"] = (
        lambda v: to_logit_space(v[None], ALPHA)[0][0],
        lambda v: to_logit_space(v[None], ALPHA)[1][0],
        10,
    )
    return cases


@pytest.mark.parametrize("name", list(layer_cases()))
def test_each_layer_logdet_equals_the_brute_force_jacobian(name):
    function, logdet, size = layer_cases()[name]
    x = torch.rand(size, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 200 + 20
    if name != "logit preprocessing":
        x = (x - 120) / 60
    torch.testing.assert_close(logdet(x), brute_force_logdet(function, x), rtol=1e-9, atol=1e-8)


@pytest.mark.parametrize("arch", ARCHS)
def test_whole_flow_logdet_equals_the_brute_force_jacobian(arch):
    model = small_flow(arch).double()
    w = model.dequantize(images(1, seed=4))[0].double()[0]
    latent = lambda v: model.forward_with_logdet(v[None])[0][0]  # noqa: E731
    logdet = model.forward_with_logdet(w[None])[1][0]
    torch.testing.assert_close(logdet, brute_force_logdet(latent, w), rtol=1e-9, atol=1e-6)


@pytest.mark.parametrize("arch", ARCHS)
def test_a_flow_with_the_label_in_its_couplings_keeps_an_exact_inverse_and_log_determinant(arch):
    torch.manual_seed(0)
    model = perturbed(create_model("flow", **SMALL[arch], conditional=True, conditioning="couplings"))
    for layer in model.modules():
        if isinstance(layer, ActNorm):
            layer.initialized.fill_(1)
    model = model.eval().double()
    with torch.no_grad():  # the class prior alone would make labels matter: take it away
        model.class_prior.mean.zero_()
        model.class_prior.log_scale.zero_()
    w = model.dequantize(images(1, seed=4))[0].double()
    three = torch.tensor([3])
    latent = lambda v: model.forward_with_logdet(v[None], three)[0][0]  # noqa: E731
    z, logdet = model.forward_with_logdet(w, three)
    torch.testing.assert_close(logdet[0], brute_force_logdet(latent, w[0]), rtol=1e-9, atol=1e-6)
    code = model.label_code(three, w)
    torch.testing.assert_close(model.body.inverse(model.body(w, code)[0], code), w, atol=1e-8, rtol=0)
    # the label reaches the map itself: another class, another latent and density for the same image
    other = model.forward_with_logdet(w, torch.tensor([7]))
    assert not torch.allclose(other[0], z, atol=1e-6) and not torch.allclose(other[1], logdet)


@pytest.mark.parametrize("kind", ["simple", "gated"])
@pytest.mark.parametrize("size", [(2, 14, 14), (4, 7, 7), (1, 28, 28)])
def test_label_maps_enter_the_first_convolution_per_class_as_if_they_were_concatenated_channels(kind, size):
    torch.manual_seed(0)
    channels, height, width = size
    net = perturbed(coupling_net(kind, channels + 10, 8, 4, blocks=1)).double()
    h = torch.randn(6, channels, height, width, dtype=torch.float64)
    code = one_hot(torch.tensor([0, 3, 3, 9, 5, 1]), 10, h)
    maps = label_maps(code, h)
    concatenated = net(torch.cat([h, code[:, :, None, None].expand(-1, -1, height, width)], 1))
    weights = torch.randn_like(concatenated)
    reference = torch.autograd.grad((concatenated * weights).sum(), [net[0].weight, net[0].bias])
    per_class = run_network(net, h, maps)
    torch.testing.assert_close(per_class, concatenated, rtol=1e-10, atol=1e-10)
    for got, want in zip(torch.autograd.grad((per_class * weights).sum(), [net[0].weight, net[0].bias]), reference):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------- the untrained model in closed form


def preprocessing_distribution() -> TransformedDistribution:
    """What an identity flow is: a standard normal pushed through sigmoid, the margin and the 256 scale."""
    base = Independent(Normal(torch.zeros(PIXELS, dtype=torch.float64), torch.ones(PIXELS, dtype=torch.float64)), 1)
    margin = AffineTransform(loc=-ALPHA / (1 - 2 * ALPHA), scale=1 / (1 - 2 * ALPHA))
    return TransformedDistribution(base, [SigmoidTransform(), margin, AffineTransform(0.0, 256.0)])


@pytest.mark.parametrize("arch", ARCHS)
def test_fresh_model_density_is_its_preprocessing(arch):
    torch.manual_seed(0)
    # zero-initialised couplings and split priors, actnorm before its first training batch: identities
    model = create_model("flow", **SMALL[arch]).double().eval()
    # the 1x1 convolutions' rotations were drawn in float32, orthogonal only to about 1e-7, which over
    # 784 pixels and several steps moves the log-determinant by up to 1e-4 nats depending on the CPU's
    # QR; re-orthogonalised in float64 they are exact rotations and the flow is exactly the identity
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, InvertibleConv1x1):
                layer.weight.copy_(torch.linalg.qr(layer.weight)[0])
    w = model.dequantize(images(6))[0].double()
    torch.testing.assert_close(model.log_density(w), preprocessing_distribution().log_prob(w), rtol=1e-12, atol=1e-8)
    bpd = model.validation_step(images(6))["bpd"]
    assert 7 < bpd.item() < 9  # about 8 bits: uniform noise costs nothing less than the 8 bits of a byte


def exact_log_probability_of_an_identity_flow(x: torch.Tensor) -> torch.Tensor:
    """log P(x) for integer images under the untrained flow: per pixel, the mass of [x, x + 1)."""
    x = x.flatten(1).double()

    def cdf(w):
        y = ALPHA + (1 - 2 * ALPHA) * w / 256
        return torch.special.ndtr(torch.logit(y))

    return torch.log(cdf(x + 1) - cdf(x)).sum(1)


def dark_and_mid_range_digits() -> torch.Tensor:
    """Mid-range pixels, where an identity flow's density is nearly flat across each unit cube, and ten
    dark ones, where it is not (next to the logit's edge): those open a Jensen gap of about 1.5 nats each."""
    x = torch.randint(90, 170, (4, PIXELS), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    x[:, :10] = torch.randint(0, 3, (4, 10), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    return x


def test_dequantized_bounds_approach_the_exact_discrete_probability():
    torch.manual_seed(0)
    model = create_model("flow", **SMALL["realnvp-mlp"]).double().eval()
    x = dark_and_mid_range_digits()
    exact = exact_log_probability_of_an_identity_flow(x)
    estimates = dequantized_log_likelihood(model, x.view(4, 28, 28), seed=0, draws=200, batch_size=2)
    single, weighted = estimates["dequantized"].per_image, estimates["importance_weighted"].per_image
    assert (single < exact - 5).all()  # Jensen: E log p(x + u) <= log E p(x + u) = log P(x)
    assert (weighted >= single).all()
    assert ((exact - weighted).abs() < 0.25 * (exact - single)).all()


# ---------------------------------------------------------------- training, sampling, latents


def test_actnorm_starts_from_the_first_batch_statistics():
    layer = ActNorm(3).train()
    x = torch.randn(64, 3, 5, 5) * torch.tensor([2.0, 0.5, 7.0]).view(1, 3, 1, 1) + 4
    y, _ = layer(x)
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-4, rtol=0)
    assert layer.initialized.item() == 1
    before = layer.log_scale.detach().clone()
    layer(x * 3)  # a later batch does not re-initialise
    assert torch.equal(layer.log_scale.detach(), before)


@pytest.mark.parametrize("arch", ARCHS)
def test_a_few_steps_on_one_batch_lower_bits_per_dim(arch):
    torch.manual_seed(0)
    model = create_model("flow", **SMALL[arch]).train()
    optimizer = model.configure_optimizers()[0]
    batch = load_dataset("mnist-mini", None).train.images[:64]
    first = model.training_step(batch)["bpd"].item()
    for _ in range(30):
        loss = model.training_step(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert model.training_step(batch)["bpd"].item() < first - 0.3


@pytest.mark.parametrize("arch", ARCHS)
def test_samples_are_seeded_images_and_temperature_zero_is_the_mode_of_the_latent(arch):
    model = small_flow(arch)
    draw = lambda seed, t=1.0: model.sample(5, generator=torch.Generator().manual_seed(seed), temperature=t)  # noqa: E731
    first = draw(1)
    assert first.shape == (5, 1, 28, 28) and 0 <= first.min() and first.max() <= 1
    assert torch.equal(first, draw(1)) and not torch.equal(first, draw(2))
    cold = draw(1, 0.0)
    torch.testing.assert_close(cold, cold[:1].expand_as(cold))  # every draw is the decoded zero latent
    torch.testing.assert_close(cold[:1], model.decode_images(torch.zeros(1, PIXELS)))


def test_encoding_an_image_and_decoding_it_returns_the_pixel_centres():
    model = small_flow("realnvp-ms")
    batch = images(3, seed=6)
    decoded = model.decode_images(model.encode_images(batch)) * 256
    torch.testing.assert_close(decoded.view(3, 28, 28), batch.double().float() + 0.5, atol=2e-3, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_checkpoint_round_trip_keeps_the_density(arch, tmp_path):
    model = small_flow(arch)
    save_checkpoint(tmp_path / "flow.safetensors", model, model_name="flow", config=model.config, data={}, train={})
    loaded, _ = load_checkpoint(tmp_path / "flow.safetensors", expected_model="flow")
    w = model.dequantize(images(4))[0]
    torch.testing.assert_close(loaded.eval().log_density(w), model.log_density(w), rtol=0, atol=0)


def test_bits_per_dim_and_nats_agree():
    model = small_flow("realnvp-mlp")
    torch.manual_seed(0)
    bpd = model.bits_per_dim(images(3))
    torch.manual_seed(0)
    nats = model.log_density(model.dequantize(images(3))[0])
    torch.testing.assert_close(bpd, -nats / (PIXELS * math.log(2)))


# ---------------------------------------------------------------- the commands, on the bundled subset


def dgm(*args):
    from typer.testing import CliRunner

    from dgm_cli.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


# realnvp-conv's layers are realnvp-ms-full's checkerboard couplings; the command line is the same
@pytest.mark.parametrize("arch", ["realnvp-mlp", "realnvp-ms", "realnvp-ms-full"])
def test_train_sample_eval_and_interpolate_a_flow(arch, tmp_path):
    import json

    from PIL import Image

    sizes = [f"--{name.replace('_', '-')}={value}" for name, value in SMALL[arch].items()]
    trained = dgm(
        "train",
        "flow",
        *sizes,
        "--epochs",
        "1",
        "--dataset",
        "mnist-mini",
        "--out",
        "run",
        "--checkpoint-dir",
        "ckpt",
        "--max-grad-norm",
        "50",
        "--device",
        "cpu",
        "--json",
    )
    final = json.loads(trained.stdout)["final"]
    assert final["val_bpd"] < 7  # one epoch on 5,000 digits is already far below the 8 bits of noise
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # untrained, mostly-black digits sit deep in the logit's tails: far above 8 bits
    assert [r["epoch"] for r in history] == [0, 1] and history[0]["val_bpd"] > 20
    assert {"train_bpd", "test_bpd"} <= set(history[-1])
    for name in ("curves.png", "samples/epoch_000.png", "samples/epoch_001.png", "best.safetensors"):
        assert (tmp_path / "run" / name).is_file(), name

    dgm("sample", "flow", "ckpt/flow.safetensors", "-n", "16", "--temperature", "0.7", "--out", "cold.png")
    assert Image.open("cold.png").size == (2 * (4 * 30 + 2),) * 2  # 4x4 digits of 28 + 2 padding, drawn at 2x

    report = json.loads(
        dgm(
            "eval",
            "flow",
            "ckpt/flow.safetensors",
            "--limit",
            "50",
            "--dequantization-draws",
            "4",
            "--samples",
            "100",
            "--json",
        ).stdout
    )
    likelihood = report["likelihood"]
    assert likelihood["images"] == 50
    assert likelihood["importance_weighted"]["nats"] >= likelihood["dequantized"]["nats"]
    assert likelihood["dequantized"]["bits_per_dim"] == pytest.approx(
        -likelihood["dequantized"]["nats"] / (PIXELS * math.log(2))
    )
    assert likelihood["dequantized"]["bits_per_dim_standard_error"] > 0
    assert report["sample_quality"]["model"]["fid"] > 0

    dgm("interpolate", "flow", "ckpt/flow.safetensors", "--rows", "2", "--steps", "3", "--out", "walk.png")
    dgm(
        "interpolate",
        "flow",
        "ckpt/flow.safetensors",
        "--from-images",
        "--dataset",
        "mnist-mini",
        "--steps",
        "3",
        "--out",
        "real.png",
    )
    assert Image.open("walk.png").size == (2 * (5 * 30 + 2), 2 * (2 * 30 + 2))  # two rows of 3 steps + 2 ends
    assert Image.open("real.png").size == (2 * (5 * 30 + 2), 2 * (30 + 2))


def test_the_learning_rate_is_constant_unless_a_cosine_is_asked_for():
    constant, cosine = create_model("flow", **SMALL["realnvp-mlp"]), create_model("flow", lr_schedule="cosine")
    assert [constant.learning_rate_factor(p) for p in (0, 0.5, 1)] == [1.0, 1.0, 1.0]
    assert [round(cosine.learning_rate_factor(p), 12) for p in (0, 0.5, 1)] == [1.0, 0.5, 0.0]


def test_the_sliced_couplings_compute_the_textbook_masked_couplings():
    """Rebuild each coupling in the masked form (full 784-wide input and output, multiplied by the
    checkerboard mask) from the sliced weights, and run both on the same vector."""
    torch.manual_seed(0)
    model = small_flow("realnvp-mlp").double()
    order = checkerboard_order(28, 28)
    white, black = order[: PIXELS // 2], order[PIXELS // 2 :]
    x = torch.randn(3, PIXELS, dtype=torch.float64)
    z, logdet = model.body(x)

    expected, expected_logdet = x.clone(), torch.zeros(3, dtype=torch.float64)
    for index, coupling in enumerate(model.body.couplings):
        kept, changed = (white, black) if index % 2 == 0 else (black, white)
        mask = torch.zeros(PIXELS, dtype=torch.float64)
        mask[kept] = 1
        first, last = coupling.net[0], coupling.net[-1]
        wide_in = torch.zeros(first.out_features, PIXELS, dtype=torch.float64)
        wide_in[:, kept] = first.weight
        raw = coupling.net[1:-1](F.linear(expected * mask, wide_in, first.bias))
        out = F.linear(raw, last.weight, last.bias)
        half = len(changed)
        s = torch.zeros(3, PIXELS, dtype=torch.float64)
        t = torch.zeros(3, PIXELS, dtype=torch.float64)
        s[:, changed], t[:, changed] = torch.tanh(out[:, :half]), out[:, half:]
        expected = expected * mask + (1 - mask) * (expected * torch.exp(s) + t)
        expected_logdet += s.sum(1)
    torch.testing.assert_close(z, expected)
    torch.testing.assert_close(logdet, expected_logdet)


# ---------------------------------------------------------------- checkerboard couplings and variational dequantization


def test_a_checkerboard_coupling_changes_one_colour_and_inverts_with_its_context():
    mask = checkerboard_mask(4, 4, parity=0)
    assert mask[0, 0].tolist() == [[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1]]
    torch.manual_seed(0)
    layer = perturbed(CheckerboardCoupling(1, 6, parity=0, net="gated", blocks=1, context=1, height=4, width=4))
    x, context = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    y, _ = layer(x, context)
    assert torch.equal(y * mask, x * mask)  # the conditioning colour passes unchanged
    assert not torch.allclose(y * (1 - mask), x * (1 - mask))
    torch.testing.assert_close(layer.inverse(y, context), x, atol=1e-5, rtol=0)
    assert not torch.allclose(layer(x, torch.zeros_like(context))[0], y)  # the context enters the networks


def small_dequantizer(seed: int = 0) -> VariationalDequantization:
    torch.manual_seed(seed)
    return VariationalDequantization(2, 4, net="gated", blocks=1).double()


def test_variational_log_q_is_minus_the_brute_force_log_determinant_of_its_noise_to_u_map():
    dequantizer = perturbed(small_dequantizer(), scale=0.3)
    x = images(1).flatten(1).double()
    r = torch.rand(1, PIXELS, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    u, log_q = dequantizer(x, r)
    assert ((u > 0) & (u < 1)).all()
    # r is uniform on the unit cube (density 1), so q(u|x) = 1 / |det du/dr|
    logdet = brute_force_logdet(lambda v: dequantizer(x, v[None])[0][0], r[0])
    torch.testing.assert_close(log_q[0], -logdet, rtol=1e-9, atol=1e-6)


def test_a_fresh_variational_dequantization_is_the_uniform_on_its_margin():
    dequantizer = small_dequantizer()
    x, r = images(2).flatten(1).double(), torch.rand(2, PIXELS, dtype=torch.float64)
    u, log_q = dequantizer(x, r)
    torch.testing.assert_close(u, MARGIN + (1 - 2 * MARGIN) * r, rtol=0, atol=1e-12)
    torch.testing.assert_close(log_q, torch.full((2,), -PIXELS * math.log(1 - 2 * MARGIN), dtype=torch.float64))


def test_variational_bounds_stay_below_the_exact_discrete_probability_and_training_q_closes_the_gap():
    torch.manual_seed(0)
    # an untrained body (the preprocessing alone, whose discrete probability is known exactly)
    # with a variational dequantization trained for it
    model = create_model(
        "flow",
        hidden=16,
        couplings=2,
        dequantization="variational",
        dequantization_steps=2,
        dequantization_channels=8,
        gated_blocks=1,
    ).double()
    x = dark_and_mid_range_digits()
    exact = exact_log_probability_of_an_identity_flow(x)

    def bounds():
        estimates = dequantized_log_likelihood(model, x.view(4, 28, 28), seed=0, draws=100, batch_size=4)
        return estimates["dequantized"].per_image, estimates["importance_weighted"].per_image

    uniform_single, _ = bounds()  # q starts as the uniform
    optimizer = torch.optim.Adam(model.dequantizer.parameters(), lr=3e-3)
    model.train()
    for _ in range(200):
        loss = -model.log_weight(x.view(4, 28, 28)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    single, weighted = bounds()
    assert (single < exact).all()  # Jensen: E_q log(p / q) <= log E_q(p / q) = log P(x)
    assert (weighted >= single).all()
    # the learned q has closed more than half of the uniform's Jensen gap (8.5-16 nats here)
    assert ((exact - single) < 0.5 * (exact - uniform_single)).all()
    # (the importance-weighted estimate is not compared with the exact value: a q fitted by this reverse
    # KL is narrower than p, so its weights are heavy-tailed and a 100-draw estimate lands up to a few
    # nats either side; q's density itself is checked against the brute-force Jacobian above)


def test_the_exponential_schedule_multiplies_the_rate_by_the_decay_once_per_epoch():
    model = create_model("flow", lr_schedule="exponential", lr_decay=0.9, epochs=10)
    steps_per_epoch = 7
    factors = [model.learning_rate_factor(step / (10 * steps_per_epoch)) for step in range(10 * steps_per_epoch)]
    for epoch in range(10):
        assert factors[epoch * steps_per_epoch : (epoch + 1) * steps_per_epoch] == [0.9**epoch] * steps_per_epoch
    assert model.learning_rate_factor(1.0) == 0.9**9  # the last step of the run stays in the last epoch


@pytest.mark.parametrize("name", ["tutorial-checkerboard", "tutorial-vardeq", "tutorial-multiscale"])
def test_each_flow_preset_builds_trains_a_step_and_round_trips_through_a_checkpoint(name, tmp_path):
    from dgm_cli.models.flow import PRESETS
    from dgm_cli.registry import create_config

    preset = PRESETS[name]
    config = create_config("flow", preset=name)
    assert all(getattr(config, key) == value for key, value in preset.overrides.items())
    assert preset.protocol["samples"] == 8 and preset.protocol["value"] == "bits_per_dim"
    torch.manual_seed(0)
    model = create_model("flow", preset=name).train()
    optimizer = model.configure_optimizers()[0]
    batch = images(2)
    loss = model.training_step(batch)["loss"]
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    save_checkpoint(tmp_path / "flow.safetensors", model, model_name="flow", config=model.config, data={}, train={})
    loaded, info = load_checkpoint(tmp_path / "flow.safetensors", expected_model="flow")
    assert info.config.preset == name
    torch.manual_seed(1)
    expected = model.eval().log_weight(batch)
    torch.manual_seed(1)
    torch.testing.assert_close(loaded.log_weight(batch), expected, rtol=0, atol=0)
