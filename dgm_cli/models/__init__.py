"""The built-in models; importing each module registers it."""

from dgm_cli.models import vae  # noqa: F401
