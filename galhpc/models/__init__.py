"""Model registry: config name -> class, imported lazily so optional pieces stay optional."""

from __future__ import annotations

import importlib
from typing import Any

from galhpc.config import ModelConfig, check_arguments
from galhpc.models.base import GalaxyModel
from galhpc.runtime.errors import ConfigError, GalhpcError

REGISTRY: dict[str, str] = {
    "vae": "galhpc.models.vae:ConvVAE",
    "gaussian_vae": "galhpc.models.vae:GaussianVAE",
    "astrovader": "galhpc.models.vade:AstroVaDEr",
    "vqvae": "galhpc.models.vqvae:VQVAE",
    "convae": "galhpc.models.convae:ConvAE",
    "vqvae_prior": "galhpc.models.pixelcnn:VQVAEPrior",
    "hvae": "galhpc.models.hvae:HierarchicalAEVAE",
    "segae": "galhpc.models.segment:SegmentationAE",
}


def model_class(name: str) -> type[GalaxyModel]:
    """The model class a config name stands for, importing its module.

    Parameters
    ----------
    name : str
        A key of `REGISTRY` (``model.name`` in a training config), e.g. ``"astrovader"``.

    Returns
    -------
    type of GalaxyModel
        The class, not an instance.

    Raises
    ------
    ValueError
        For a name not in `REGISTRY`, listing the known ones.
    """
    try:
        target = REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {sorted(REGISTRY)}") from None
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def build_model(cfg: ModelConfig, **collaborators: Any) -> GalaxyModel:
    """Instantiate the model a config names, with its shape, `params` and the built collaborators.

    Reads no file: `galhpc.checkpoint.assemble_model` reads the collaborators a config names
    (e.g. the VQ-VAE under a PixelCNN prior) and hands them in here.

    Parameters
    ----------
    cfg : ModelConfig
        ``name``, ``image_size`` (pixels), ``channels``, ``latent_dim`` and ``params`` (the
        class's keyword arguments).
    **collaborators
        Built modules the class takes, e.g. ``vqvae=`` for ``vqvae_prior``.

    Returns
    -------
    GalaxyModel
        The model, freshly initialised (from the global torch RNG).

    Raises
    ------
    ValueError
        For a model name not in `REGISTRY`.
    ConfigError
        For a mistyped params key (one line naming it) or params the class refuses.
    """
    cls = model_class(cfg.name)
    params = check_arguments(cls, cfg.params, "model.params")  # one line naming a mistyped key
    try:
        return cls(image_size=cfg.image_size, channels=cfg.channels, latent_dim=cfg.latent_dim, **params,
                   **collaborators)
    except (TypeError, ValueError) as err:  # unknown or impossible params: the config's fault
        if isinstance(err, GalhpcError):
            raise
        raise ConfigError(f"model {cfg.name!r}: {err}") from err
