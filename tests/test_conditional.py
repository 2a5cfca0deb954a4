"""Conditional models (--conditional): labels reach every network, the class mixture and the generative
classifier are what their definitions say, old checkpoints still load, and bad input gets one line."""

import functools
import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from dgm_cli.checkpoint import load_checkpoint
from dgm_cli.cli import app
from dgm_cli.conditional import class_mixture, label_log_prior
from dgm_cli.data import load_bundled
from dgm_cli.errors import DgmError
from dgm_cli.estimators import dequantized_log_likelihood
from dgm_cli.models.conditioning import ClassConditionalGaussian
from dgm_cli.progress import quiet_console
from dgm_cli.registry import create_config, create_model
from dgm_cli.trainer import RunSettings, train

FIXTURES = Path(__file__).parent / "fixtures"
runner = CliRunner()
TINY = {
    "vae": {"hidden": 16, "zdim": 2},
    "gan": {"latent_dim": 4},
    "flow": {"hidden": 8, "couplings": 2},
    "flow-ms": {"arch": "realnvp-ms", "steps": 1, "channels": 8},
}


def tiny(name: str, **overrides):
    model = "flow" if name.startswith("flow") else name
    return create_model(model, **TINY[name], **overrides)


def give_labels_weight(model) -> None:
    """The parts through which a label acts start at zero (an untrained conditional model is the
    unconditional one); give them values, as training would."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith(("decoder.", "class_prior.")):
                parameter.normal_(0, 0.3)
            elif name.startswith("body."):  # a flow's couplings, which may take the label: nudged, not replaced
                parameter.add_(0.02 * torch.randn_like(parameter))


def dgm(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("name", list(TINY))
def test_labels_change_samples_and_a_labelless_draw_cycles_through_the_classes(name):
    model = tiny(name, conditional=True).eval()
    give_labels_weight(model)
    draw = lambda labels: model.sample(4, generator=torch.Generator().manual_seed(0), labels=labels)  # noqa: E731
    threes, sevens = draw(torch.full((4,), 3)), draw(torch.full((4,), 7))
    assert not torch.allclose(threes, sevens, atol=1e-4)
    assert torch.equal(draw(torch.full((4,), 3)), threes)  # the seed fixes everything else
    cycled = model.sample(12, generator=torch.Generator().manual_seed(0))
    assert torch.equal(
        cycled, model.sample(12, generator=torch.Generator().manual_seed(0), labels=torch.arange(12) % 10)
    )


def before_conditioning(name: str, tmp_path: Path) -> Path:
    """A checkpoint written by the code before conditioning existed. The GAN's (3.5 million weights, 7 MB) is
    kept as its header alone, metadata and tensor names and shapes, and rebuilt here with zero weights: what
    loading checks is the header, and the weights' values do not matter to it."""
    if name != "gan":
        return FIXTURES / f"{name}-before-conditional.safetensors"
    header = json.loads((FIXTURES / "gan-before-conditional.json").read_text())
    path = tmp_path / "gan-before-conditional.safetensors"
    dtypes = {"F16": torch.float16, "F32": torch.float32, "I64": torch.int64}
    tensors = {key: torch.zeros(spec["shape"], dtype=dtypes[spec["dtype"]]) for key, spec in header["tensors"].items()}
    save_file(tensors, str(path), metadata=header["metadata"])
    return path


@pytest.mark.parametrize("name", ["vae", "gan", "flow"])
def test_an_unconditional_checkpoint_from_before_conditioning_still_loads_and_samples(name, tmp_path):
    model, info = load_checkpoint(before_conditioning(name, tmp_path), expected_model=name, device="cpu")
    assert model.classes == 0 and info.config.conditional is False
    today = type(model)(info.config)  # today's code, the stored configuration: the same parameter names
    assert sorted(model.state_dict()) == sorted(today.state_dict())
    assert model.eval().sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, 1, 28, 28)
    with pytest.raises(DgmError, match="unconditional"):
        model.sample(2, labels=torch.tensor([1, 2]))


def test_a_conditional_flow_from_before_the_conditioning_option_loads_as_what_it_was_a_class_prior_alone(tmp_path):
    """Written by the code before --conditioning existed (a 2-coupling conditional MLP flow): its coupling
    networks take no label, and loading it must not build them with one (today's default)."""
    model, info = load_checkpoint(
        FIXTURES / "flow-conditional-prior-only.safetensors", expected_model="flow", device="cpu"
    )
    assert info.config.conditioning == "prior" and model.classes == 10
    assert create_config("flow", conditional=True).conditioning == "couplings"  # what a new run gets
    threes = model.eval().sample(2, generator=torch.Generator().manual_seed(0), labels=torch.tensor([3, 3]))
    assert threes.shape == (2, 1, 28, 28)


def test_conditioning_without_conditional_is_refused():
    result = dgm("train", "flow", "--conditioning", "prior", "--epochs", "0")
    assert result.exit_code == 1 and "--conditioning would change nothing" in result.output
    assert "--conditional" in result.output


def test_the_class_prior_is_the_gaussian_torch_distributions_gives():
    prior = ClassConditionalGaussian(10, 6)
    with torch.no_grad():
        prior.mean.normal_()
        prior.log_scale.normal_(0, 0.5)
    z, labels = torch.randn(5, 6), torch.tensor([0, 3, 3, 9, 1])
    eps, logdet = prior.standardize(z, labels)
    ours = torch.distributions.Normal(0.0, 1.0).log_prob(eps).sum(1) + logdet
    reference = torch.distributions.Normal(prior.mean[labels], prior.log_scale[labels].exp()).log_prob(z).sum(1)
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(prior.draw(eps, labels), z)


def test_the_conditional_vae_elbo_is_its_direct_computation_with_torch_distributions():
    model = tiny("vae", conditional=True)
    give_labels_weight(model)
    x = torch.bernoulli(torch.full((3, 784), 0.3))
    labels = torch.tensor([2, 5, 5])
    code = torch.nn.functional.one_hot(labels, 10).float()
    torch.manual_seed(4)
    terms = model.elbo(x, labels)
    torch.manual_seed(4)
    mean, logvar = model.encoder(torch.cat([x, code], 1)).chunk(2, dim=1)
    z = mean + (0.5 * logvar).exp() * torch.randn(3, 2)
    posterior = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    prior = torch.distributions.Normal(torch.zeros(2), torch.ones(2))
    likelihood = torch.distributions.Bernoulli(logits=model.decoder(torch.cat([z, code], 1))).log_prob(x).sum(1)
    kl = torch.distributions.kl_divergence(posterior, prior).sum(1)
    torch.testing.assert_close(terms["elbo"], likelihood - kl)


def test_the_projection_discriminator_adds_the_label_embedding_times_the_features():
    model = tiny("gan", conditional=True)
    with torch.no_grad():
        model.discriminator.embedding.weight.normal_()
    x, labels = torch.rand(4, 784) * 2 - 1, torch.tensor([0, 1, 8, 8])
    d = model.discriminator
    features = d[4](d[3](d[1](d[0](x))))  # dropout off: Linear, LeakyReLU, Linear, LeakyReLU
    expected = d[6](features) + (d.embedding.weight[labels] * features).sum(1, keepdim=True)
    torch.testing.assert_close(d(x, labels=labels), expected)
    plain = tiny("gan").discriminator  # unconditional: the network alone, with no embedding
    assert plain.embedding is None
    torch.testing.assert_close(plain(x), plain[6](plain[4](plain[3](plain[1](plain[0](x))))))


def test_the_class_mixture_and_the_generative_classifier_match_a_direct_computation():
    """log p(x) = logsumexp_y log p(x|y) + log p(y), computed here from the flow's exact densities."""
    model = tiny("flow", conditional=True).eval()
    give_labels_weight(model)
    data = load_bundled()
    images, labels = data.test.images[:40], data.test.labels[:40]
    log_prior = label_log_prior(data.train.labels, 10)
    assert math.isclose(log_prior.exp().sum().item(), 1.0)
    mixture = class_mixture(
        functools.partial(dequantized_log_likelihood, draws=1),
        model,
        images,
        labels,
        log_prior=log_prior,
        seed=5,
        batch_size=40,
    )

    torch.manual_seed(5)  # the estimator's one uniform dequantization draw, the same for every class
    w = images.flatten(1).float() + torch.rand(40, 784)
    with torch.no_grad():
        table = torch.stack([model.log_density(w, torch.full((40,), y)) for y in range(10)], 1).double()
    joint = table + log_prior
    expected = torch.logsumexp(joint, 1)
    assert mixture["mixture"]["nats"] == pytest.approx(expected.mean().item(), rel=1e-6)
    assert mixture["conditional"]["nats"] == pytest.approx(table[torch.arange(40), labels].mean().item(), rel=1e-6)
    accuracy = (joint.argmax(1) == labels).double().mean().item()
    assert mixture["generative_classifier"]["accuracy"] == pytest.approx(accuracy)
    # The mixture holds the true class's term: log p(x) >= log p(x|y) + log p(y), image by image.
    own_joint = joint[torch.arange(40), labels]
    assert (expected >= own_joint).all() and mixture["mixture"]["nats"] >= own_joint.mean().item()


def test_conditional_training_needs_labels_in_range_and_writes_nothing_otherwise(tmp_path):
    data = load_bundled()
    data.train.labels[0] = 12  # a label outside the ten classes
    settings = RunSettings(out_dir=tmp_path / "run", seed=0, device=torch.device("cpu"), checkpoint_dir=None)
    with pytest.raises(DgmError, match="10 classes"):
        train("vae", create_config("vae", **TINY["vae"], conditional=True, epochs=1), data, settings, quiet_console())
    assert not (tmp_path / "run").exists()
    with pytest.raises(DgmError, match="one stochastic layer"):
        create_config("vae", conditional=True, stochastic_layers=2)


def test_cli_conditional_train_sample_interpolate_eval(tmp_path):
    run = dgm(
        "train",
        "vae",
        "--conditional",
        "--hidden",
        "32",
        "--zdim",
        "2",
        "--epochs",
        "1",
        "--dataset",
        "mnist-mini",
        "--out",
        "run",
        "--checkpoint-dir",
        "ck",
        "--sample-epochs",
        "1",
        "--device",
        "cpu",
    )
    assert run.exit_code == 0, run.output
    width, height = Image.open(tmp_path / "run" / "samples" / "epoch_001.png").size  # 10 rows (classes) of 7
    assert height > width

    sampled = dgm("sample", "vae", "run", "-n", "20", "--out", "all.png")
    assert sampled.exit_code == 0 and "one row per class (2 each)" in sampled.stderr
    assert Image.open(tmp_path / "all.png").size[1] > Image.open(tmp_path / "all.png").size[0]
    assert dgm("sample", "vae", "run", "-n", "4", "--label", "7", "--out", "sevens.png").exit_code == 0
    assert dgm("manifold", "vae", "run", "--label", "3", "--grid", "4", "--out", "m.png").exit_code == 0
    swept = dgm("interpolate", "vae", "run", "--across-classes", "--rows", "2", "--out", "sweep.png")
    assert (
        swept.exit_code == 0 and Image.open(tmp_path / "sweep.png").size[0] > Image.open(tmp_path / "sweep.png").size[1]
    )
    walked = dgm("interpolate", "vae", "run", "--label", "4", "--out", "walk.png")
    assert walked.exit_code == 0 and "as class 4" in walked.stderr

    result = dgm(
        "eval",
        "vae",
        "run",
        "--iw-samples",
        "4",
        "--mc-samples",
        "0",
        "--samples",
        "100",
        "--limit",
        "30",
        "--temperature",
        "0.8",
        "--dataset",
        "mnist-mini",
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["likelihood"]["conditional"] is True
    mixture = report["class_mixture"]
    assert mixture["images"] == 30 and len(mixture["generative_classifier"]["per_class_accuracy"]) == 10
    quality = report["conditional_quality"]
    assert 0 <= quality["accuracy"] <= 1 and len(quality["per_class_quality"]) == 10
    assert quality["per_class_quality"][3]["samples"] == 10 and report["sample_quality"]["samples"] == 100
    assert report["sample_quality"]["temperature"] == 0.8


@pytest.mark.parametrize(
    "arguments, message",
    [
        (("sample", "vae", "{unconditional}", "--label", "3"), "unconditional"),
        (("sample", "vae", "{conditional}", "--label", "10"), "not one of this model's classes (0..9)"),
        (("manifold", "vae", "{conditional}"), "add --label"),
        (("interpolate", "vae", "{conditional}", "--classes", "3,8"), "use --label or --across-classes"),
        (("interpolate", "vae", "{unconditional}", "--across-classes"), "unconditional"),
        (
            ("train", "vae", "--conditional", "--stochastic-layers", "2", "--dataset", "mnist-mini", "--out", "bad"),
            "one stochastic layer",
        ),
    ],
)
def test_bad_conditional_input_gets_one_line_and_writes_nothing(tmp_path, arguments, message):
    conditional = tiny("vae", conditional=True)
    paths = {"conditional": tmp_path / "c.safetensors", "unconditional": tmp_path / "u.safetensors"}
    tiny("vae").save(paths["unconditional"])
    from dgm_cli.checkpoint import save_checkpoint

    save_checkpoint(
        paths["conditional"],
        conditional,
        model_name="vae",
        config=conditional.config,
        data=load_bundled().describe(),
        train={"epoch": 0, "step": 0, "seed": 0},
    )
    before = set(tmp_path.iterdir())
    output = () if arguments[0] == "train" else ("--out", "x.png")
    result = dgm(*[argument.format(**paths) for argument in arguments], *output)
    assert result.exit_code == 1, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1 or "using" in result.stderr
    assert set(tmp_path.iterdir()) == before
