"""The invertible layers of the convolutional flows, on (B, C, H, W) tensors.

Every layer maps x -> (y, log|det dy/dx| per image) and has an exact inverse;
tests/test_flow.py checks each log-determinant against autograd's full
Jacobian. Sources: RealNVP (Dinh et al. 2017: affine couplings, checkerboard
and channel masks, squeezing, factoring out), Glow (Kingma & Dhariwal 2018:
actnorm, invertible 1x1 convolutions, the learned split prior), Flow++ (Ho et
al. 2019: gated coupling networks, the learned bound on the log-scale).
"""

import torch
import torch.nn.functional as F
from torch import distributed, nn

from dgm_cli.models.conditioning import LabelMaps
from dgm_cli.models.coupling_nets import coupling_net, simple_conv_net


def squeeze(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 4C, H/2, W/2): each 2x2 patch becomes four channels (a permutation)."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, 4 * c, h // 2, w // 2)


def unsqueeze(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.view(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c // 4, 2 * h, 2 * w)


def channel_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (unbiased) standard deviation of (B, C, H, W), keepdim.

    Under torchrun they are those of the global batch (two all-reduces, once per layer at the first
    step), so every process starts its actnorm layers where a single process would.
    """
    dims = (0, 2, 3)
    if not (distributed.is_available() and distributed.is_initialized() and distributed.get_world_size() > 1):
        return x.mean(dim=dims, keepdim=True), x.std(dim=dims, keepdim=True)
    totals = torch.cat([x.sum(dim=dims, keepdim=True), torch.full_like(x[:1, :, :1, :1], x[:, :1].numel())])
    distributed.all_reduce(totals)
    mean = totals[:1] / totals[1:]
    squares = (x - mean).square().sum(dim=dims, keepdim=True)
    distributed.all_reduce(squares)
    return mean, (squares / (totals[1:] - 1)).sqrt()


class ActNorm(nn.Module):
    """y = (x + bias) * exp(log_scale) per channel, set from the first training batch to zero mean and unit variance.

    Unlike batch normalisation it is the same function in training and
    evaluation, so the density of an image does not depend on its batch.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.uint8))

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        mean, std = channel_moments(x)
        self.bias.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + 1e-6))
        self.initialized.fill_(1)

    def forward(self, x):
        if self.training and not self.initialized:
            self.initialize(x)
        h, w = x.shape[2:]
        return (x + self.bias) * torch.exp(self.log_scale), self.log_scale.sum().expand(len(x)) * (h * w)

    def inverse(self, y):
        return y * torch.exp(-self.log_scale) - self.bias


class InvertibleConv1x1(nn.Module):
    """A learned channel mixing (Glow): y = W x at every pixel, log-determinant H W log|det W|."""

    def __init__(self, channels: int):
        super().__init__()
        # A random rotation: invertible, log-determinant 0 at the start.
        self.weight = nn.Parameter(torch.linalg.qr(torch.randn(channels, channels))[0])

    def forward(self, x):
        h, w = x.shape[2:]
        logdet = torch.linalg.slogdet(self.weight)[1] * (h * w)
        return F.conv2d(x, self.weight[:, :, None, None]), logdet.expand(len(x))

    def inverse(self, y):
        return F.conv2d(y, torch.linalg.inv(self.weight)[:, :, None, None])


class LogScaleBound(nn.Module):
    """log-scale = b tanh(raw / b): no coupling scales by more than e^b, so early steps cannot blow up.

    fixed: b = 1 (the RealNVP couplings dgm has always had, whose checkpoints this keeps);
    learned: b = exp(parameter) per channel, starting at 1 (Flow++), so a trained coupling may scale further.
    """

    def __init__(self, channels: int, *, learned: bool):
        super().__init__()
        self.log_bound = nn.Parameter(torch.zeros(1, channels, 1, 1)) if learned else None

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        if self.log_bound is None:
            return torch.tanh(raw)
        bound = torch.exp(self.log_bound)
        return bound * torch.tanh(raw / bound)


def with_context(h: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
    """A network's input: h with the context (an image's channels, a label's one-hot code) beside it, if any."""
    return h if context is None else torch.cat([h, context], 1)


def run_network(net: nn.Sequential, h: torch.Tensor, context: torch.Tensor | LabelMaps | None) -> torch.Tensor:
    """net applied to h with the context channels beside it: an image's (concatenated), or a label's
    constant maps, which enter the first convolution per class rather than as channels (LabelMaps)."""
    if not isinstance(context, LabelMaps):
        return net(with_context(h, context))
    first, *rest = net
    if not isinstance(first, nn.Conv2d):
        return net(with_context(h, context.materialize()))
    out = context.first_layer(first, h)
    for layer in rest:
        out = layer(out)
    return out


class ConvCoupling(nn.Module):
    """Affine coupling on channels: the second half is scaled and shifted by a conv net of the first
    (and of `context` extra channels, e.g. a label's maps, which are not transformed)."""

    def __init__(self, channels: int, hidden: int, *, net: str = "simple", blocks: int = 2, context: int = 0):
        super().__init__()
        self.split = channels // 2
        self.net = coupling_net(net, self.split + context, hidden, 2 * (channels - self.split), blocks=blocks)
        self.bound = LogScaleBound(channels - self.split, learned=net != "simple")

    def scale_shift(self, x_a, context):
        raw_scale, shift = run_network(self.net, x_a, context).chunk(2, dim=1)
        return self.bound(raw_scale), shift

    def forward(self, x, context=None):
        x_a, x_b = x[:, : self.split], x[:, self.split :]
        log_scale, shift = self.scale_shift(x_a, context)
        return torch.cat([x_a, x_b * torch.exp(log_scale) + shift], 1), log_scale.flatten(1).sum(1)

    def inverse(self, y, context=None):
        y_a, y_b = y[:, : self.split], y[:, self.split :]
        log_scale, shift = self.scale_shift(y_a, context)
        return torch.cat([y_a, (y_b - shift) * torch.exp(-log_scale)], 1)


def checkerboard_mask(height: int, width: int, parity: int) -> torch.Tensor:
    """(1, 1, H, W): 1 on the squares with (row + column) % 2 == parity, the pixels a coupling conditions on."""
    rows = torch.arange(height).view(-1, 1)
    columns = torch.arange(width).view(1, -1)
    return ((rows + columns) % 2 == parity).float().view(1, 1, height, width)


class CheckerboardCoupling(nn.Module):
    """Affine coupling on the image itself (RealNVP's spatial mask): the pixels of one colour of a
    checkerboard are scaled and shifted by a conv net that sees the other colour, so the network sees
    each pixel's neighbourhood as an image.

    `context` extra channels (e.g. the image a dequantization flow is conditioned on) enter the
    network beside the masked input; they are not transformed.
    """

    def __init__(
        self,
        channels: int,
        hidden: int,
        *,
        parity: int,
        net: str = "gated",
        blocks: int = 2,
        context: int = 0,
        height: int = 28,
        width: int = 28,
    ):
        super().__init__()
        self.register_buffer("mask", checkerboard_mask(height, width, parity), persistent=False)
        self.net = coupling_net(net, channels + context, hidden, 2 * channels, blocks=blocks)
        self.bound = LogScaleBound(channels, learned=net != "simple")

    def scale_shift(self, conditioning: torch.Tensor, context: torch.Tensor | None):
        raw_scale, shift = run_network(self.net, conditioning, context).chunk(2, dim=1)
        changed = 1 - self.mask
        return self.bound(raw_scale) * changed, shift * changed

    def forward(self, x, context=None):
        log_scale, shift = self.scale_shift(x * self.mask, context)
        return x * torch.exp(log_scale) + shift, log_scale.flatten(1).sum(1)

    def inverse(self, y, context=None):
        log_scale, shift = self.scale_shift(y * self.mask, context)  # the conditioning pixels are unchanged
        return (y - shift) * torch.exp(-log_scale)


def run_forward(layers, h: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Couplings or flow steps, one after another, each given the same context:
    (output, summed log-determinant)."""
    logdet = h.new_zeros(len(h))
    for layer in layers:
        h, change = layer(h, context)
        logdet = logdet + change
    return h, logdet


def run_inverse(layers, h: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
    for layer in reversed(layers):
        h = layer.inverse(h, context)
    return h


class FlowStep(nn.Module):
    """Glow's step: actnorm, an invertible 1x1 convolution, an affine channel coupling (which alone sees the context)."""

    def __init__(self, channels: int, hidden: int, *, net: str = "simple", blocks: int = 2, context: int = 0):
        super().__init__()
        self.layers = nn.ModuleList(
            [
                ActNorm(channels),
                InvertibleConv1x1(channels),
                ConvCoupling(channels, hidden, net=net, blocks=blocks, context=context),
            ]
        )

    def forward(self, x, context=None):
        actnorm, mixing, coupling = self.layers
        h, first = actnorm(x)
        h, second = mixing(h)
        h, third = coupling(h, context)
        return h, first + second + third

    def inverse(self, y, context=None):
        actnorm, mixing, coupling = self.layers
        return actnorm.inverse(mixing.inverse(coupling.inverse(y, context)))


class SplitPrior(nn.Module):
    """Factor out half the channels: eps = (x_out - mean(x_kept)) / exp(log_scale(x_kept)).

    Written as one more invertible layer onto a standard normal, so the whole
    flow is a single bijection (B, 784) -> (B, 784) with one log-determinant.
    With `context` channels (a label's maps) the mean and scale depend on them too.
    """

    def __init__(self, channels: int, hidden: int, *, context: int = 0):
        super().__init__()
        self.kept = channels // 2
        self.net = simple_conv_net(self.kept + context, hidden, 2 * (channels - self.kept))

    def forward(self, x, context=None):
        kept, out = x[:, : self.kept], x[:, self.kept :]
        mean, log_scale = run_network(self.net, kept, context).chunk(2, dim=1)
        return kept, (out - mean) * torch.exp(-log_scale), -log_scale.flatten(1).sum(1)

    def inverse(self, kept, eps, context=None):
        mean, log_scale = run_network(self.net, kept, context).chunk(2, dim=1)
        return torch.cat([kept, mean + eps * torch.exp(log_scale)], 1)
