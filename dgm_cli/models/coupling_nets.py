"""The networks inside convolutional couplings: any function of the conditioning half, zero at the start.

A coupling's network never has to be inverted (the coupling's inverse runs it
forwards on the same, unchanged input), so it can be anything; what it must
do is start at zero, so that each coupling starts as the identity.

  simple  3x3 conv -> ReLU -> 1x1 conv -> ReLU -> 3x3 conv (RealNVP's shape, small)
  gated   a 3x3 conv into `hidden` channels, then `blocks` gated residual blocks
          (Flow++, Ho et al. 2019; PixelCNN++'s concat-ELU), each followed by a layer
          norm over the channels of every pixel, then concat-ELU and a 3x3 conv out
"""

import torch
import torch.nn.functional as F
from torch import nn

COUPLING_NETS = ("simple", "gated")


def zero_last_layer(net: nn.Sequential) -> nn.Sequential:
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    return net


def simple_conv_net(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    """3x3 -> ReLU -> 1x1 -> ReLU -> 3x3 with the last layer at zero (an identity coupling at the start)."""
    return zero_last_layer(
        nn.Sequential(
            nn.Conv2d(inputs, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1),
            nn.ReLU(),
            nn.Conv2d(hidden, outputs, 3, padding=1),
        )
    )


class ConcatELU(nn.Module):
    """[elu(x), elu(-x)] along the channels: a nonlinearity that keeps the sign's information (2x channels)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.elu(torch.cat([x, -x], dim=1))


class ChannelLayerNorm(nn.Module):
    """Layer normalisation over the channels of each pixel of (B, C, H, W), with a learned scale and shift.

    Per pixel and per image, so, unlike batch normalisation, an image's density does not depend on its batch.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class GatedResidualBlock(nn.Module):
    """x + a * sigmoid(g), where (a, g) = 1x1(concat-ELU(3x3(concat-ELU(x)))): Flow++'s gated residual unit."""

    def __init__(self, channels: int):
        super().__init__()
        self.net = nn.Sequential(
            ConcatELU(),
            nn.Conv2d(2 * channels, channels, 3, padding=1),
            ConcatELU(),
            nn.Conv2d(2 * channels, 2 * channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.net(x).chunk(2, dim=1)
        return x + value * torch.sigmoid(gate)


def gated_conv_net(inputs: int, hidden: int, outputs: int, blocks: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(inputs, hidden, 3, padding=1)]
    for _ in range(blocks):
        layers += [GatedResidualBlock(hidden), ChannelLayerNorm(hidden)]
    layers += [ConcatELU(), nn.Conv2d(2 * hidden, outputs, 3, padding=1)]
    return zero_last_layer(nn.Sequential(*layers))


def coupling_net(kind: str, inputs: int, hidden: int, outputs: int, *, blocks: int = 2) -> nn.Sequential:
    if kind == "simple":
        return simple_conv_net(inputs, hidden, outputs)
    if kind == "gated":
        return gated_conv_net(inputs, hidden, outputs, blocks)
    raise ValueError(f"unknown coupling network {kind!r}; use one of {', '.join(COUPLING_NETS)}")
