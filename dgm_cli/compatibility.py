"""Whether the installed torchvision works with the installed torch.

pip can end up with a pair that does not match (an offline install that fell back to another version, a CPU
wheel beside a CUDA one): torch and training still work, and torchvision fails only when first imported, deep
in a download or a metric, with an error about a missing operator. dgm imports it through require_torchvision,
which says in one line what is installed and what to do.
"""

import importlib.metadata

from dgm_cli.errors import DgmError


def matching_torchvision(torch_version: str) -> str:
    """The torchvision release made for a torch release: 0.(minor + 15) for torch 2.minor."""
    major, minor = (int(part) for part in torch_version.split("+")[0].split(".")[:2])
    return f"0.{minor + 15}" if major == 2 else "the release made for it"


def installed(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def require_torchvision() -> None:
    """Import torchvision, or raise one line naming the installed pair and the matching one."""
    try:
        import torchvision  # noqa: F401  (a mismatched pair fails here, registering its compiled operators)
    except Exception as error:
        import torch

        reason = " ".join(str(error).split())[:120] or type(error).__name__
        wanted = matching_torchvision(torch.__version__)
        raise DgmError(
            f"torchvision {installed('torchvision')} does not work with torch {torch.__version__} ({reason}); "
            f"install the matching pair: pip install torch=={torch.__version__.split('+')[0]} "
            f'"torchvision=={wanted}.*" (from the same index or wheel folder)'
        ) from None
