"""Convolutional building blocks and weight initialisation shared by the VAE-family models."""

from __future__ import annotations

import torch
from torch import nn


def check_image_size(image_size: int, n_halvings: int, model: str, param: str = "filters") -> int:
    """Side of the feature map after `n_halvings` stride-2 steps; refuses sizes that do not divide.

    Parameters
    ----------
    image_size : int
        Side H = W of the model's stamps, in pixels.
    n_halvings : int
        Number of stride-2 layers (or 2x2 poolings) the encoder applies.
    model : str
        The model's registry name, for the message.
    param : str
        The parameter whose length sets `n_halvings` (e.g. ``"filters"``), for the message.

    Returns
    -------
    int
        image_size // 2**n_halvings, the side of the coarsest map in pixels.

    Raises
    ------
    ValueError
        One line naming the model, image_size and `param`, at build time rather than at
        the first batch, when image_size is not a positive multiple of 2**n_halvings.
    """
    factor = 2**n_halvings
    if image_size % factor or image_size < factor:
        raise ValueError(f"{model}: image_size {image_size} must be a positive multiple of {factor} "
                         f"({n_halvings} halvings, one per entry of {param}); change image_size or {param}")
    return image_size // factor


def he_init(module: nn.Module, negative_slope: float) -> None:
    """He (Kaiming) normal init for every conv/linear layer under `module`, zero biases (He et al. 2015).

    Parameters
    ----------
    module : torch.nn.Module
        Initialised in place, in `module.modules()` order (so a seeded build is reproducible).
    negative_slope : float
        The LeakyReLU slope the gain is computed for.
    """
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.kaiming_normal_(layer.weight, a=negative_slope, nonlinearity="leaky_relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def xavier_init(layer: nn.Module) -> None:
    """Xavier (Glorot) uniform init for one layer, used on output layers (Glorot & Bengio 2010).

    Parameters
    ----------
    layer : torch.nn.Module
        A layer with a `weight` (and optionally a `bias`, zeroed), changed in place.
    """
    nn.init.xavier_uniform_(layer.weight)
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)


def down_block(c_in: int, c_out: int, slope: float) -> nn.Sequential:
    """Conv 4x4 stride 2 -> BatchNorm -> LeakyReLU: halves the spatial size (Danilov 2020).

    Parameters
    ----------
    c_in, c_out : int
        Input and output channels.
    slope : float
        Negative slope of the LeakyReLU.

    Returns
    -------
    torch.nn.Sequential
        Maps (B, c_in, H, W) to (B, c_out, H/2, W/2).
    """
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(slope),
    )


def up_block(c_in: int, c_out: int, slope: float) -> nn.Sequential:
    """Transposed conv 4x4 stride 2 -> BatchNorm -> LeakyReLU: doubles the spatial size.

    Parameters
    ----------
    c_in, c_out : int
        Number of channels entering, then leaving, the block.
    slope : float
        LeakyReLU negative slope.

    Returns
    -------
    torch.nn.Sequential
        Takes (B, c_in, H, W) to (B, c_out, 2H, 2W).
    """
    return nn.Sequential(
        nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(slope),
    )


def vgg_block(c_in: int, c_out: int, kernel: int, slope: float) -> nn.Sequential:
    """Two 'same' convs with LeakyReLU, then 2x2 max-pool (AstroVaDEr encoder, Spindler et al. 2021).

    Parameters
    ----------
    c_in, c_out : int
        Channels entering and leaving the block.
    kernel : int
        Odd kernel side of both convs, in pixels.
    slope : float
        Negative slope of each LeakyReLU.

    Returns
    -------
    torch.nn.Sequential
        (B, c_in, H, W) -> (B, c_out, H/2, W/2).
    """
    pad = kernel // 2
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=pad),
        nn.LeakyReLU(slope),
        nn.Conv2d(c_out, c_out, kernel, padding=pad),
        nn.LeakyReLU(slope),
        nn.MaxPool2d(2),
    )


def upsample_block(c_in: int, c_out: int, kernel: int, slope: float) -> nn.Sequential:
    """Bilinear 2x upsampling, then two 'same' convs with LeakyReLU (AstroVaDEr decoder, Spindler et al. 2021).

    Parameters
    ----------
    c_in, c_out : int
        Channels before and after.
    kernel : int
        Odd side of the two conv kernels, in pixels.
    slope : float
        The LeakyReLUs' negative slope.

    Returns
    -------
    torch.nn.Sequential
        (B, c_in, H, W) -> (B, c_out, 2H, 2W).
    """
    pad = kernel // 2
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        nn.Conv2d(c_in, c_out, kernel, padding=pad),
        nn.LeakyReLU(slope),
        nn.Conv2d(c_out, c_out, kernel, padding=pad),
        nn.LeakyReLU(slope),
    )


class ConvTrunk(nn.Module):
    """Stride-2 4x4 conv blocks (BatchNorm, LeakyReLU; `down_block`), flattened.

    The encoder trunk of the convolutional VAE (Danilov 2020) and of the star/galaxy models:
    one halving per entry of `widths`.

    Parameters
    ----------
    image_size : int
        Side H = W of the input stamps in pixels; a positive multiple of 2**len(widths).
    channels : int
        Bands C of the input.
    widths : list of int
        Output channels of each stride-2 block, finest first.
    slope : float
        Negative slope of the LeakyReLU.
    model, param : str
        The model's registry name and the parameter whose length sets the number of
        halvings, for `check_image_size`'s message.

    Raises
    ------
    ValueError
        When image_size is not a positive multiple of 2**len(widths).
    """

    def __init__(self, image_size: int, channels: int, widths: list[int], slope: float = 0.2, *,
                 model: str, param: str) -> None:
        super().__init__()
        side = check_image_size(image_size, len(widths), model, param)
        chans = [channels, *widths]
        self.features = nn.Sequential(*(down_block(a, b, slope) for a, b in zip(chans[:-1], chans[1:], strict=False)))
        self.out_features = widths[-1] * side * side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened features of a batch of stamps.

        Parameters
        ----------
        x : torch.Tensor
            Images (B, C, H, W) float32.

        Returns
        -------
        torch.Tensor
            (B, `out_features`) float32, `out_features` = widths[-1] * (H / 2**n)**2.
        """
        return self.features(x).flatten(1)


class ConvHead(nn.Module):
    """Dense layer to a small map, transposed 4x4 stride-2 conv blocks up to the image (linear output).

    The mirror of `ConvTrunk`: the decoder of the convolutional VAE (Danilov 2020) and the
    image head of the star/galaxy models.

    Parameters
    ----------
    image_size : int
        Side H = W of the output images in pixels; a positive multiple of 2**len(widths).
    channels : int
        Output maps (bands, or 2 x bands for a mean and a log-variance).
    in_dim : int
        Size of the input vectors (a latent or a code).
    widths : list of int
        Channels of each resolution, finest first (as for `ConvTrunk`).
    slope : float
        Negative slope of the LeakyReLU.
    model, param : str
        As for `ConvTrunk`.

    Raises
    ------
    ValueError
        When image_size is not a positive multiple of 2**len(widths).
    """

    def __init__(self, image_size: int, channels: int, in_dim: int, widths: list[int], slope: float = 0.2, *,
                 model: str, param: str) -> None:
        super().__init__()
        self.side = check_image_size(image_size, len(widths), model, param)
        self.width = widths[-1]
        self.dense = nn.Sequential(nn.Linear(in_dim, self.width * self.side**2), nn.LeakyReLU(slope))
        chans = list(reversed(widths))
        self.features = nn.Sequential(*(up_block(a, b, slope) for a, b in zip(chans[:-1], chans[1:], strict=False)))
        self.out = nn.ConvTranspose2d(chans[-1], channels, 4, stride=2, padding=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Output maps of a batch of vectors.

        Parameters
        ----------
        h : torch.Tensor
            (B, in_dim) float32.

        Returns
        -------
        torch.Tensor
            (B, channels, H, W) float32, unbounded (the caller applies any output function).
        """
        return self.out(self.features(self.dense(h).view(-1, self.width, self.side, self.side)))


def check_images(x: torch.Tensor, expected: tuple[int, int, int], model: str) -> None:
    """Refuse a batch that is not (B, C, H, W) of the model's shape, with one line naming both.

    Parameters
    ----------
    x : torch.Tensor
        The batch handed to the model.
    expected : tuple of int
        (C, H, W) the model was built for.
    model : str
        The model's registry name, for the message.

    Raises
    ------
    ValueError
        When x is not 4-d or its (C, H, W) differ from `expected`.
    """
    if x.dim() != 4 or tuple(x.shape[1:]) != expected:
        raise ValueError(f"{model}: images must be (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}")


def reparameterise(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Z = mu + sigma * eps with eps ~ N(0, I) from the global torch RNG (Kingma & Welling 2014).

    Parameters
    ----------
    mu : torch.Tensor
        Posterior means (B, L).
    logvar : torch.Tensor
        Posterior log σ² (B, L), natural log of latent units squared.

    Returns
    -------
    torch.Tensor
        One draw z (B, L) of q(z|x), differentiable in mu and logvar.
    """
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

