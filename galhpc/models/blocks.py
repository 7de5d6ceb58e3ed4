"""Convolutional building blocks and weight initialisation shared by the VAE-family models."""

from __future__ import annotations

import torch
from torch import nn


def check_image_size(image_size: int, n_halvings: int, model: str, param: str = "filters") -> int:
    """Side of the feature map after `n_halvings` stride-2 steps; refuses sizes that do not divide.

    Raises
    ------
    ValueError
        One line naming the model, image_size and `param` (the parameter whose length sets
        the number of halvings), at build time rather than at the first batch.
    """
    factor = 2**n_halvings
    if image_size % factor or image_size < factor:
        raise ValueError(f"{model}: image_size {image_size} must be a positive multiple of {factor} "
                         f"({n_halvings} halvings, one per entry of {param}); change image_size or {param}")
    return image_size // factor


def he_init(module: nn.Module, negative_slope: float) -> None:
    """He (Kaiming) normal init for every conv/linear layer under `module`, zero biases."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.kaiming_normal_(layer.weight, a=negative_slope, nonlinearity="leaky_relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def xavier_init(layer: nn.Module) -> None:
    """Xavier (Glorot) uniform init for one layer, used on output layers."""
    nn.init.xavier_uniform_(layer.weight)
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)


def down_block(c_in: int, c_out: int, slope: float) -> nn.Sequential:
    """Conv 4x4 stride 2 -> BatchNorm -> LeakyReLU: halves the spatial size (Danilov 2020)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(slope),
    )


def up_block(c_in: int, c_out: int, slope: float) -> nn.Sequential:
    """Transposed conv 4x4 stride 2 -> BatchNorm -> LeakyReLU: doubles the spatial size."""
    return nn.Sequential(
        nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(slope),
    )


def vgg_block(c_in: int, c_out: int, kernel: int, slope: float) -> nn.Sequential:
    """Two 'same' convs with LeakyReLU, then 2x2 max-pool (AstroVaDEr encoder)."""
    pad = kernel // 2
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=pad),
        nn.LeakyReLU(slope),
        nn.Conv2d(c_out, c_out, kernel, padding=pad),
        nn.LeakyReLU(slope),
        nn.MaxPool2d(2),
    )


def upsample_block(c_in: int, c_out: int, kernel: int, slope: float) -> nn.Sequential:
    """Bilinear 2x upsampling, then two 'same' convs with LeakyReLU (AstroVaDEr decoder)."""
    pad = kernel // 2
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        nn.Conv2d(c_in, c_out, kernel, padding=pad),
        nn.LeakyReLU(slope),
        nn.Conv2d(c_out, c_out, kernel, padding=pad),
        nn.LeakyReLU(slope),
    )


def reparameterise(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Z = mu + sigma * eps with eps ~ N(0, I) from the global torch RNG."""
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

