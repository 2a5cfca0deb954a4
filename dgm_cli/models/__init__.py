"""The built-in models; importing each module registers it."""

from dgm_cli.models import classifier, diffusion, flow, gan, vae  # noqa: F401
