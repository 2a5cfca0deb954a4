"""Dequantization: the noise u in [0, 1)^784 that turns 8-bit images x into points w = x + u of a density.

For any distribution q(u|x) on the unit cube,
    log P(x) = log E_q[p(x + u) / q(u|x)] >= E_q[log p(x + u) - log q(u|x)],
so a flow's density p bounds the discrete probability of an image from below.

  uniform      q = U[0, 1)^784, log q = 0 (RealNVP, Glow)
  variational  q(u|x) is itself a flow conditioned on the image (Flow++, Ho et al. 2019), trained
               with the model: where the density p changes across a pixel's unit cube (next to
               the logit's edge, at the black background), a uniform u wastes bits that a
               learned q recovers. It starts as the uniform: every coupling starts at the identity.

The variational q, step by step, each with its exact log-determinant:
    r ~ U[0, 1)^784                                      log density 0
    u0 = delta + (1 - 2 delta) r, delta = 1e-6             -784 log(1 - 2 delta)   (keeps logit(u0) finite)
    v0 = logit(u0)                                        -sum log u0 (1 - u0)
    v = checkerboard couplings of v0, conditioned on x     -sum of their log-scales
    u = sigmoid(v)                                        +sum log sigmoid(v) sigmoid(-v)
and log q(u|x) = - (the log-determinants' sum), the density of r being 1.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from dgm_cli.data import IMAGE_SHAPE, PIXELS
from dgm_cli.models.flow_layers import CheckerboardCoupling

DEQUANTIZATIONS = ("uniform", "variational")
MARGIN = 1e-6


class UniformDequantization(nn.Module):
    def forward(self, x: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images x (B, 784) as floats and r ~ U[0, 1) of the same shape -> (u, log q(u|x) per image)."""
        return r, r.new_zeros(len(r))


class VariationalDequantization(nn.Module):
    """q(u|x): uniform noise through a flow of checkerboard couplings that see the image beside the noise."""

    def __init__(self, steps: int, hidden: int, *, net: str, blocks: int):
        super().__init__()
        self.couplings = nn.ModuleList(
            CheckerboardCoupling(1, hidden, parity=index % 2, net=net, blocks=blocks, context=1)
            for index in range(steps)
        )

    def forward(self, x: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image = (x / 255 * 2 - 1).view(-1, *IMAGE_SHAPE)  # the condition, in [-1, 1]
        u0 = MARGIN + (1 - 2 * MARGIN) * r.view(-1, *IMAGE_SHAPE)
        log_u0, log_1mu0 = torch.log(u0), torch.log1p(-u0)
        v = log_u0 - log_1mu0
        logdet = PIXELS * math.log(1 - 2 * MARGIN) - (log_u0 + log_1mu0).flatten(1).sum(1)
        for coupling in self.couplings:
            v, change = coupling(v, image)
            logdet = logdet + change
        logdet = logdet + (F.logsigmoid(v) + F.logsigmoid(-v)).flatten(1).sum(1)
        return torch.sigmoid(v).flatten(1), -logdet


def make_dequantization(kind: str, *, steps: int, hidden: int, net: str, blocks: int) -> nn.Module:
    if kind == "uniform":
        return UniformDequantization()
    if kind == "variational":
        return VariationalDequantization(steps, hidden, net=net, blocks=blocks)
    raise ValueError(f"unknown dequantization {kind!r}; use one of {', '.join(DEQUANTIZATIONS)}")
