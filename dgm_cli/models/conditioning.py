"""Class labels as a model input: what the VAE, the GAN and the flows share when trained with --conditional.

A conditional model learns p(x | y) for the dataset's classes y = 0..C-1 (10 for MNIST):
  VAE   q(z | x, y) and p(x | z, y): the label's one-hot vector joins the
        encoder's pixels and the decoder's latent (Kingma et al. 2014, M2's
        generative half; Sohn et al. 2015);
  GAN   G(z, y) with the one-hot vector beside z, and a projection
        discriminator D(x, y) = psi(phi(x)) + embed(y) . phi(x) (Miyato and
        Koyama 2018);
  flow  a class-dependent base distribution: the latent of class y is
        N(mean_y, diag(exp(log_scale_y))^2), learned per class for every latent
        dimension (for the multi-scale flow this covers the factored-out half
        as well: its split prior's residual is part of the latent); with
        --conditioning couplings (the default) the one-hot label is also an
        input of every coupling network and of the split prior, as constant
        channels beside a convolutional network's input, so the whole map
        from image to latent depends on the class, not only where the latent lies.
With the training label frequencies p(y), the unconditional density is the
mixture p(x) = sum_y p(x | y) p(y), and argmax_y p(x | y) p(y) is a generative
classifier (dgm eval reports both).
"""

import torch
import torch.nn.functional as F
from torch import nn

from dgm_cli.errors import DgmError

CLASSES = (
    10  # the named datasets' classes (digits, or Fashion-MNIST's garments); an image folder's are in config.classes
)


def one_hot(labels: torch.Tensor, classes: int, like: torch.Tensor) -> torch.Tensor:
    """Labels (...,) -> one-hot vectors (..., classes) in the dtype and on the device of `like`."""
    return F.one_hot(labels.to(like.device), classes).to(like.dtype)


def with_label(h: torch.Tensor, labels: torch.Tensor | None, classes: int) -> torch.Tensor:
    """h (B, ..., d) with the one-hot label appended to its last dimension (unchanged when unconditional).

    labels are (B,): one per image, shared by every draw of that image in the middle dimensions.
    """
    if classes == 0:
        return h
    code = one_hot(labels, classes, h)
    code = code.view(len(h), *([1] * (h.dim() - 2)), classes).expand(*h.shape[:-1], classes)
    return torch.cat([h, code], dim=-1)


class LabelMaps:
    """A one-hot label as constant channels (B, C, H, W) beside a convolutional network's input, kept as the codes.

    Concatenated, the C channels make the network's first 3x3 convolution (C + inputs) channels wide
    for every image: for the multi-scale flow's 2- and 4-channel coupling inputs that multiplied the
    first layer's work by 3 to 6. But that convolution is linear in its input, so the label channels'
    part of its output is, for class k, one fixed (hidden, H, W) map: the response of the weights'
    label slice to a constant one in channel k (not a constant: the zero padding makes the border
    differ). `first_layer` computes the C maps once per call, from one all-ones image, and adds
    each image's class map (the codes times the maps): the same function as the concatenation.
    `materialize` is the concatenated form, for networks that are not a convolution first.
    """

    def __init__(self, code: torch.Tensor, height: int, width: int):
        self.code, self.height, self.width = code, height, width

    def materialize(self) -> torch.Tensor:
        """(B, C, H, W), expanded rather than copied (a concatenation copies)."""
        return self.code[:, :, None, None].expand(-1, -1, self.height, self.width)

    def first_layer(self, conv: nn.Conv2d, h: torch.Tensor) -> torch.Tensor:
        """conv(cat([h, maps])) for a convolution whose input channels are h's and then the C label channels."""
        inputs = h.shape[1]
        out = F.conv2d(h, conv.weight[:, :inputs], conv.bias, conv.stride, conv.padding)
        # Every label channel's response to a constant one, in one convolution of a single all-ones image:
        # the label slice of the weights as (hidden * C) one-channel filters.
        label_weights = conv.weight[:, inputs:]
        hidden, classes = label_weights.shape[:2]
        ones = h.new_ones(1, 1, self.height, self.width)
        per_class = F.conv2d(
            ones,
            label_weights.reshape(hidden * classes, 1, *label_weights.shape[2:]),
            stride=conv.stride,
            padding=conv.padding,
        )
        per_class = per_class.view(hidden, classes, -1).transpose(0, 1).reshape(classes, -1)  # (C, hidden*H'*W')
        # out + codes @ maps in one pass
        return torch.addmm(out.flatten(1), self.code.to(h.dtype), per_class).view_as(out)


def label_maps(code: torch.Tensor | None, like: torch.Tensor) -> LabelMaps | None:
    """One-hot codes (B, C) -> the constant channels of a convolutional network the size of `like`
    (None stays None: an unconditional network)."""
    if code is None:
        return None
    return LabelMaps(code, *like.shape[2:])


def balanced_labels(n: int, classes: int) -> torch.Tensor:
    """0, 1, ..., classes-1, 0, 1, ...: n labels with every class as often as n allows."""
    return torch.arange(n) % classes


def class_rows(classes: int, per_class: int) -> torch.Tensor:
    """per_class 0s, then per_class 1s, ...: a grid of `per_class` columns shows one class per row."""
    return torch.arange(classes).repeat_interleave(per_class)


def check_labels(labels: torch.Tensor | None, classes: int) -> None:
    """A conditional model needs labels within its classes; an unconditional one takes none."""
    if classes == 0:
        if labels is not None:
            raise DgmError("this checkpoint is unconditional (it was trained without --conditional); leave out --label")
        return
    if labels is None:
        raise DgmError("a conditional model needs the images' class labels")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        outside = sorted({value for value in labels.tolist() if not 0 <= value < classes})[:5]
        raise DgmError(f"label {', '.join(map(str, outside))} is not one of this model's classes (0..{classes - 1})")


class ClassConditionalGaussian(nn.Module):
    """The flow's base distribution per class: z | y ~ N(mean_y, diag(exp(log_scale_y))^2) over `dims` dimensions.

    Both tables start at zero, so an untrained conditional flow is the unconditional one (N(0, I) for every class).
    """

    def __init__(self, classes: int, dims: int):
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(classes, dims))
        self.log_scale = nn.Parameter(torch.zeros(classes, dims))

    def standardize(self, z: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z - mean_y) / exp(log_scale_y), a standard normal under the model, and its log-determinant per image."""
        log_scale = self.log_scale[labels]
        return (z - self.mean[labels]) * torch.exp(-log_scale), -log_scale.sum(1)

    def draw(self, eps: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Latents of class labels from standard-normal eps: mean_y + exp(log_scale_y) * eps."""
        return self.mean[labels] + torch.exp(self.log_scale[labels]) * eps
