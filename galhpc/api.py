"""The small public API of galhpc, re-exported lazily by `galhpc/__init__.py`.

`load_model` lives here; `open_catalog`, `open_store` (galhpc.io) and the two kernels
(galhpc.kernels) are documented where they are defined.
"""

from __future__ import annotations

from pathlib import Path

import torch


def load_model(path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild the model a galhpc checkpoint holds, in eval mode.

    Parameters
    ----------
    path : str or Path
        A checkpoint written by `galhpc-train` (``run/ckpt.pt``).  It carries the run's
        config, so nothing else is needed.
    device : str or torch.device, optional
        Where to put the weights (default ``"cpu"``).

    Returns
    -------
    galhpc.models.base.GalaxyModel
        A `torch.nn.Module` in eval mode with ``encode(x)`` (x: (B, C, H, W) float32 in
        the training store's pixel units; returns an encoding with ``mu`` (B, L)),
        ``decode(z)`` -> (B, C, H, W), ``reconstruct(x)`` and, for generative models,
        ``sample(n, generator, **conditions)`` -> an object with ``images`` (n, C, H, W)
        float32, ``z`` and ``component`` (int, -1 without a mixture).  ``model.name``
        is the registry name (``"astrovader"``, ``"vae"``, ``"vqvae"``, ...).

    Raises
    ------
    galhpc.checkpoint.CheckpointError
        If the file is missing, truncated, not a galhpc checkpoint, or its weights do
        not fit its config.

    See Also
    --------
    galhpc.checkpoint.load_model : also returns the run config and the raw payload.

    References
    ----------
    The models and their papers are listed in docs/models.md, among them [1]_ and [2]_.

    .. [1] Spindler, A., Geach, J. E., & Smith, M. J. (2021), "AstroVaDEr: astronomical
       variational deep embedder for unsupervised morphological classification of
       galaxies and synthetic image generation", MNRAS 502, 985.
    .. [2] van den Oord, A., Vinyals, O., & Kavukcuoglu, K. (2017), "Neural discrete
       representation learning", NeurIPS 30.

    Examples
    --------
    >>> model = load_model("run/ckpt.pt")                            # doctest: +SKIP
    >>> out = model.sample(16, torch.Generator().manual_seed(0))     # doctest: +SKIP
    >>> out.images.shape                                             # doctest: +SKIP
    torch.Size([16, 1, 64, 64])
    """
    from galhpc.checkpoint import load_model as load_checkpoint_model

    model, _, _ = load_checkpoint_model(path, map_location=device)
    return model.to(device).eval()
