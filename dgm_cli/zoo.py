"""The model zoo: pretrained models that install with the package, each under a name.

A name is a family, or a family and a tag (timm's `arch.tag` idea written with a
dash): `vae`, `vae-zdim2`, `vae-iwae-1l-vae` (the IWAE paper's row 1 preset).
The family's own name is its default model. The weights are inference-only
checkpoints (checkpoint.py) under dgm_cli/assets/; beside each lies the
evaluation report (`dgm eval ... --result`) that its headline number is read
from, so no number here is typed by hand. `made_by` gives the commands that
trained and evaluated it, on the full MNIST; the file itself is
`dgm.load(CHECKPOINT).save(FILE, inference_only=True)` of the checkpoint the
training wrote.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from dgm_cli.data import ASSETS
from dgm_cli.errors import DgmError

MEASURES = ("nll", "bits_per_dim", "fid", "accuracy", "conditional_accuracy")  # what headline_of reads


@dataclass(frozen=True)
class Pretrained:
    name: str
    family: str  # the registry's model name
    description: str
    file: str  # relative to dgm_cli/assets
    report: str  # the evaluation report the headline comes from, relative to dgm_cli/assets
    measure: str  # which number of the report is the headline: one of MEASURES
    made_by: str  # the commands that trained it and made its report
    aliases: tuple[str, ...] = ()

    @property
    def path(self) -> Path:
        return ASSETS / self.file

    def read_report(self) -> dict:
        return json.loads((ASSETS / self.report).read_text())

    def headline(self) -> dict:
        """The headline number from the evaluation report: value, standard error (or None), and what it is."""
        return headline_of(self.read_report(), self.measure)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "aliases": list(self.aliases),
            "family": self.family,
            "description": self.description,
            "file": str(self.path),
            "bytes": self.path.stat().st_size,
            "headline": self.headline(),
            "made_by": self.made_by,
        }


def _likelihood_headline(report: dict, measure: str) -> dict:
    likelihood = report["likelihood"]
    key = next(key for key in ("importance_weighted", "dequantized", "variational_bound") if key in likelihood)
    estimate = likelihood[key]
    scope = f"{report['split']} split, {likelihood['images']:,} images, {estimate['label']}"
    if measure == "nll":
        return {
            "value": -estimate["nats"],
            "standard_error": estimate["standard_error"],
            "unit": "nats",
            "what": f"NLL ({scope})",
        }
    return {
        "value": estimate["bits_per_dim"],
        "standard_error": estimate["bits_per_dim_standard_error"],
        "unit": "bits/dim",
        "what": f"NLL per dimension ({scope})",
    }


def headline_of(report: dict, measure: str) -> dict:
    """One number of an evaluation report, with its split and protocol in words."""
    if measure in ("nll", "bits_per_dim"):
        return _likelihood_headline(report, measure)
    if measure == "fid":
        quality = report["sample_quality"]
        sampler = quality.get("sampler")
        how = "" if not sampler else f", {sampler['sampler']} {sampler['steps']} steps, eta {sampler['eta']:g}"
        return {
            "value": quality["model"]["fid"],
            "standard_error": None,
            "unit": "",
            "what": f"FID ({quality['samples']:,} samples against {quality['reference_images']:,} "
            f"{report['split']} images{how}; real floor {quality['real_floor']['fid']:.2f})",
        }
    if measure == "accuracy":
        classification = report["classification"]
        return {
            "value": 100 * classification["accuracy"],
            "standard_error": None,
            "unit": "%",
            "what": f"accuracy ({report['split']} split, {classification['images']:,} images)",
        }
    if measure == "conditional_accuracy":
        quality = report["sample_quality"]
        return {
            "value": 100 * report["conditional_quality"]["accuracy"],
            "standard_error": None,
            "unit": "%",
            "what": f"of {quality['samples']:,} samples at temperature {quality['temperature']:g} read as the class "
            "asked for by the shipped classifier",
        }
    raise ValueError(f"unknown measure {measure!r}")


FULL_MNIST = "--dataset mnist"
IWAE_EVAL = "dgm eval vae FILE --iw-samples 5000 --mc-samples 0 --samples 0 --full"

PRETRAINED = (
    Pretrained(
        "vae",
        "vae",
        "VAE, 20-dimensional latent, one 500-unit hidden layer each way, 40 epochs (the seed report's model)",
        "zoo/vae.safetensors",
        "zoo/vae.eval.json",
        "nll",
        f"dgm train vae --zdim 20 --epochs 40 {FULL_MNIST}; dgm eval vae FILE --full",
    ),
    Pretrained(
        "vae-zdim2",
        "vae",
        "VAE with a 2-D latent space, 40 epochs: the one `dgm manifold` draws",
        "zoo/vae-zdim2.safetensors",
        "zoo/vae-zdim2.eval.json",
        "nll",
        f"dgm train vae --zdim 2 --epochs 40 {FULL_MNIST}; dgm eval vae FILE --full",
    ),
    Pretrained(
        "gan",
        "gan",
        "GAN, MLP generator and discriminator, 200 epochs, sampled by the generator's moving average",
        "zoo/gan.safetensors",
        "zoo/gan.eval.json",
        "fid",
        f"dgm train gan --ema 0.999 {FULL_MNIST}; dgm eval gan FILE --full",
    ),
    Pretrained(
        "flow-tutorial-multiscale",
        "flow",
        "multi-scale RealNVP with variational dequantization (the tutorial-multiscale preset), 2 of its 200 epochs",
        "zoo/flow-tutorial-multiscale.safetensors",
        "zoo/flow-tutorial-multiscale.eval.json",
        "bits_per_dim",
        f"dgm train flow --preset tutorial-multiscale {FULL_MNIST}, stopped after epoch 2 (its best.safetensors); "
        "dgm eval flow FILE --samples 0 --batch-size 200 --full",
        aliases=("flow",),
    ),
    Pretrained(
        "flow-conditional",
        "flow",
        "class-conditional multi-scale RealNVP (the label in its prior and couplings), 20 epochs",
        "zoo/flow-conditional.safetensors",
        "zoo/flow-conditional.eval.json",
        "conditional_accuracy",
        f"dgm train flow --arch realnvp-ms --conditional --epochs 20 --max-grad-norm 100 {FULL_MNIST}; "
        "dgm eval flow FILE --dequantization-draws 0 --samples 10000 --temperature 0.7 --full",
    ),
    Pretrained(
        "diffusion",
        "diffusion",
        "DDPM with a width-16 U-Net, 41 epochs, sampled by its weights' moving average",
        "zoo/diffusion.safetensors",
        "zoo/diffusion.eval.json",
        "fid",
        f"dgm train diffusion --width 16 --epochs 24 --lr 5e-4 {FULL_MNIST}; then 17 more epochs: "
        f"dgm train diffusion --init-from FILE --epochs 60 {FULL_MNIST}, stopped after its epoch 17; "
        "dgm eval diffusion FILE --bound-timesteps 0 --steps 50 --eta 1 --full",
    ),
    Pretrained(
        "vae-iwae-1l-vae",
        "vae",
        "IWAE paper, table 1 row 1: one stochastic layer (784-200-200-50, tanh), VAE objective",
        "zoo/vae-iwae-1l-vae.safetensors",
        "zoo/vae-iwae-1l-vae.eval.json",
        "nll",
        f"dgm train vae --preset iwae-1l-vae --val-size 400 {FULL_MNIST}; then dgm train vae --init-from FILE "
        f"--val-size 400 --lr 1e-4 --lr-schedule constant --epochs 100 {FULL_MNIST}; {IWAE_EVAL}",
    ),
    Pretrained(
        "vae-iwae-1l-k5",
        "vae",
        "IWAE paper, table 1 row 2: one stochastic layer, IWAE objective with k=5",
        "zoo/vae-iwae-1l-k5.safetensors",
        "zoo/vae-iwae-1l-k5.eval.json",
        "nll",
        f"dgm train vae --preset iwae-1l-k5 --ema 0 {FULL_MNIST}; then dgm train vae --init-from FILE --ema 0.9995 "
        f"--lr 1e-4 --lr-schedule constant --epochs 150 {FULL_MNIST}; {IWAE_EVAL}",
    ),
    Pretrained(
        "vae-iwae-2l-vae",
        "vae",
        "IWAE paper, table 1 row 4: two stochastic layers (784-200-200-100-100-50, tanh), VAE objective",
        "zoo/vae-iwae-2l-vae.safetensors",
        "zoo/vae-iwae-2l-vae.eval.json",
        "nll",
        f"dgm train vae --preset iwae-2l-vae --ema 0 {FULL_MNIST}; then dgm train vae --init-from FILE --ema 0.9995 "
        f"--lr 1e-4 --lr-schedule constant --epochs 40 {FULL_MNIST}; {IWAE_EVAL}",
    ),
    Pretrained(
        "classifier",
        "classifier",
        "MNIST digit classifier (a small CNN) whose features the sample-quality metrics use",
        "classifier/classifier.safetensors",
        "zoo/classifier.eval.json",
        "accuracy",
        f"dgm train classifier {FULL_MNIST}; dgm eval classifier FILE",
    ),
)


def by_name() -> dict[str, Pretrained]:
    """Every name and alias -> its pretrained model."""
    return {name: entry for entry in PRETRAINED for name in (entry.name, *entry.aliases)}


def find(name: str) -> Pretrained | None:
    return by_name().get(name)


def family_of(name: str) -> str:
    """The family a model family's or a pretrained model's name stands for."""
    from dgm_cli.registry import list_models

    if name in list_models():
        return name
    entry = find(name)
    if entry is None:
        raise DgmError(
            f"unknown model {name!r}; families: {', '.join(list_models())}; pretrained: "
            f"{', '.join(sorted(by_name()))} (dgm models --pretrained)"
        )
    return entry.family


def list_pretrained() -> list[dict]:
    """The pretrained models installed with dgm, each a dict: name (what dgm.load takes), aliases, family,
    description, file (its path), bytes, headline (value, standard_error or None, unit, and "what": the
    measure with its split and protocol, read from the model's evaluation report) and made_by (the commands
    that trained and evaluated it)."""
    return [entry.as_dict() for entry in PRETRAINED]
