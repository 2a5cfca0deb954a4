"""The registry and the config checks that stand between user input and a model."""

import pytest
import torch

from dgm_cli import config as config_tools
from dgm_cli.errors import DgmError
from dgm_cli.models.vae import VAE, VAEConfig
from dgm_cli.registry import create_model, get_spec, list_models


def test_registry_knows_the_vae():
    assert "vae" in list_models()
    spec = get_spec("vae")
    assert spec.config_class is VAEConfig and spec.module_class is VAE


def test_unknown_models_fail_loudly_with_the_known_names():
    with pytest.raises(DgmError, match="unknown model 'vqvae'; known models: .*vae"):
        get_spec("vqvae")


def test_create_model_applies_overrides():
    model = create_model("vae", zdim=2, hidden=10)
    assert model.latent_dim == 2
    assert model.encoder[0].weight.shape == (10, 784)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"zdim": 0}, "at least 1"),
        ({"zdim": True}, "whole number"),
        ({"lr": "fast"}, "must be a number"),
        ({"binarize": "sometimes"}, "one of dynamic, static"),
        ({"sample_epochs": [0, -1]}, "at least 0"),
        ({"sample_epochs": "0,1"}, "list of whole numbers"),
        ({"width": 3}, "unknown VAEConfig field(s): width"),
    ],
)
def test_configs_are_checked(values, message):
    with pytest.raises(DgmError) as error:
        config_tools.from_dict(VAEConfig, values)
    assert message in str(error.value)


def test_config_json_round_trip():
    config = VAEConfig(zdim=2, sample_epochs=(0, 5))
    import json

    assert config_tools.from_dict(VAEConfig, json.loads(config_tools.to_json(config))) == config


def test_models_declare_their_capabilities():
    assert {"latent", "manifold", "latent_likelihood"} <= VAE.capabilities
    assert VAE.monitor == ("elbo", "max")
    [optimizer] = create_model("vae", hidden=4).configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam)
