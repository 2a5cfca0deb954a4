"""Images from a trained model: samples, binary draws, the 2-D latent manifold.

Noise comes from a seeded CPU generator, so a seed gives the same latents on
every device and in every epoch of a run.
"""

import torch

from dgm_cli.errors import DgmError


@torch.no_grad()
def sample_images(
    model, n: int, *, seed: int, binary: bool = False, raw: bool = False, temperature: float = 1.0
) -> torch.Tensor:
    """n images (n, 1, 28, 28) in [0, 1].

    binary: a Bernoulli draw from each pixel's probability; raw: the live weights of a model that
    also keeps a moving average of them; temperature: the standard deviation of the latent draws.
    """
    if raw and not model.keeps_average:
        raise DgmError("this checkpoint keeps no moving average of its weights (train with --ema); leave out --raw")
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    images = model.sample(n, generator=generator, averaged=not raw, temperature=temperature)
    if binary:
        if model.pixel_distribution != "bernoulli":
            raise DgmError("binary draws need a model with Bernoulli pixels (the vae); leave out --binary")
        images = torch.bernoulli(images.cpu(), generator=generator)
    return images


@torch.no_grad()
def manifold_images(model, grid: int, *, edge: float = 0.05) -> torch.Tensor:
    if "manifold" not in model.capabilities:
        raise DgmError(f"{type(model).__name__} has no latent manifold to draw")
    if model.latent_dim != 2:
        raise DgmError(
            f"the manifold needs a 2-D latent space, but this checkpoint has {model.latent_dim} latent dimensions; "
            "train one with --zdim 2"
        )
    model.eval()
    return model.manifold(grid, edge)
