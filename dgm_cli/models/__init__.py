"""The built-in models; importing each module registers it."""

from dgm_cli.models import classifier, flow, gan, vae  # noqa: F401
