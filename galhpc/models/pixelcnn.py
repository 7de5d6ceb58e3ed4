"""Gated PixelCNN prior over VQ-VAE code maps (van den Oord et al. 2016), optionally conditional.

`GatedPixelCNN` models p(code map) = Π p(c_ij | codes before (i, j) in raster order) with
a vertical and a horizontal stack of gated convolutions (no blind spot); causality comes
from padding and shifting rather than weight masks.  A condition (class one-hot or a float)
enters every gate as a learned bias: tanh(W_f * x + V_f h) ⊙ σ(W_g * x + V_g h).

`VQVAEPrior` is the registered model "vqvae_prior": it wraps a frozen VQ-VAE (weights
and architecture kept in its own state dict, so its checkpoint is self-contained), trains
the PixelCNN on the code maps of each batch by the usual trainer, and `sample` draws code
maps and decodes them to images, e.g. `galhpc-generate --condition morph_class=2`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from galhpc.config import load_yaml
from galhpc.models.base import Batch, Encoding, GalaxyModel, LossOutput, SampleCondition, Samples, StepState
from galhpc.models.nuisance import random_angles
from galhpc.runtime.errors import CheckpointError

log = logging.getLogger("galhpc.models.pixelcnn")


def shift_down(x: torch.Tensor) -> torch.Tensor:
    """Move every row one down (row 0 becomes zeros): row i then only sees rows < i.

    Parameters
    ----------
    x : torch.Tensor
        (B, C, h, w) maps.

    Returns
    -------
    torch.Tensor
        (B, C, h, w), shifted.
    """
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1, :]


def shift_right(x: torch.Tensor) -> torch.Tensor:
    """Move every column one right (column 0 becomes zeros).

    Parameters
    ----------
    x : torch.Tensor
        Stack features, (B, C, h, w) float32.

    Returns
    -------
    torch.Tensor
        Same shape; column j holds x's column j − 1.
    """
    return F.pad(x, (1, 0, 0, 0))[:, :, :, :-1]


class GatedLayer(nn.Module):
    """One gated layer of both stacks.

    Vertical stack: a (k//2+1) x k conv over rows <= i.  Horizontal stack: a 1 x (k//2+1)
    conv over columns <= j of row i (< j in the first layer, which must not see its own
    pixel), plus the vertical features shifted one row down.
    """

    def __init__(self, channels: int, kernel: int, first: bool, cond_dim: int) -> None:
        super().__init__()
        self.first, self.half = first, kernel // 2
        self.vertical = nn.Conv2d(channels, 2 * channels, (self.half + 1, kernel))
        self.horizontal = nn.Conv2d(channels, 2 * channels, (1, self.half + 1))
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_out = nn.Conv2d(channels, channels, 1)
        self.cond = nn.Linear(cond_dim, 4 * channels) if cond_dim else None

    @staticmethod
    def gate(x: torch.Tensor) -> torch.Tensor:
        """The gated activation tanh(a) ⊙ σ(b) of the two halves of the channels (van den Oord et al. 2016).

        Parameters
        ----------
        x : torch.Tensor
            (B, 2C, h, w) pre-activations, [a | b] along channels.

        Returns
        -------
        torch.Tensor
            (B, C, h, w).
        """
        a, b = x.chunk(2, dim=1)
        return torch.tanh(a) * torch.sigmoid(b)

    def forward(self, v: torch.Tensor, h: torch.Tensor, cond: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One layer of the vertical and horizontal stacks, causal in raster order.

        Parameters
        ----------
        v, h : torch.Tensor
            Vertical and horizontal stack features (B, C, h, w).
        cond : torch.Tensor or None
            Condition vectors (B, cond_dim), added as a learned bias to every gate.

        Returns
        -------
        v_out : torch.Tensor
            (B, C, h, w), the vertical stack's next features.
        h_out : torch.Tensor
            (B, C, h, w), the horizontal stack's (with the residual connection after the first layer).
        """
        height, width = v.shape[-2:]
        v_pre = self.vertical(F.pad(v, (self.half, self.half, self.half, 0)))[:, :, :height, :width]
        h_in = shift_right(h) if self.first else h
        h_pre = self.horizontal(F.pad(h_in, (self.half, 0, 0, 0))) + self.v_to_h(shift_down(v_pre))
        if self.cond is not None:
            cv, ch = self.cond(cond)[:, :, None, None].chunk(2, dim=1)
            v_pre, h_pre = v_pre + cv, h_pre + ch
        v_out = self.gate(v_pre)
        h_out = self.h_out(self.gate(h_pre))
        return v_out, (h_out if self.first else h + h_out)


class GatedPixelCNN(nn.Module):
    """Logits (B, K, h, w) of each code given the codes before it (and a condition vector)."""

    def __init__(self, num_codes: int, channels: int = 64, layers: int = 8, kernel: int = 5, cond_dim: int = 0) -> None:
        super().__init__()
        if kernel % 2 == 0 or kernel < 3:
            raise ValueError(f"pixelcnn: kernel must be odd and >= 3, got {kernel}")
        self.num_codes, self.cond_dim = num_codes, cond_dim
        self.embedding = nn.Embedding(num_codes, channels)
        self.layers = nn.ModuleList(GatedLayer(channels, kernel, i == 0, cond_dim) for i in range(layers))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.ReLU(),
                                  nn.Conv2d(channels, num_codes, 1))

    def forward(self, codes: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of each code given the codes before it in raster order (and the condition).

        Parameters
        ----------
        codes : torch.Tensor
            (B, h, w) int64 code indices.
        cond : torch.Tensor, optional
            (B, cond_dim) float32 condition vectors.

        Returns
        -------
        torch.Tensor
            (B, K, h, w) float32 logits over the K codes.
        """
        x = self.embedding(codes).permute(0, 3, 1, 2)
        v, h = x, x
        for layer in self.layers:
            v, h = layer(v, h, cond)
        return self.head(h)

    @torch.no_grad()
    def sample(self, n: int, shape: tuple[int, int], cond: torch.Tensor | None = None,
               generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        """Code maps drawn in raster order, one forward pass per position.

        Parameters
        ----------
        n : int
            Number of maps.
        shape : tuple of int
            (h, w), the code grid.
        cond : torch.Tensor, optional
            (n, cond_dim) condition vectors.
        generator : torch.Generator, optional
            Source of the draws (on the model's device).
        temperature : float
            Logits are divided by it (1: the model's distribution).

        Returns
        -------
        torch.Tensor
            (n, h, w) int64 code indices.
        """
        device = self.embedding.weight.device
        codes = torch.zeros(n, *shape, dtype=torch.long, device=device)
        for i in range(shape[0]):
            for j in range(shape[1]):
                logits = self(codes, cond)[:, :, i, j] / temperature
                probs = torch.softmax(logits.double(), dim=1)
                codes[:, i, j] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        return codes


class Condition:
    """How a label column of the store becomes the PixelCNN's condition vector.

    spec: {"column": "morph_class", "kind": "class", "num_classes": 3} (one-hot) or
    {"column": "disk_hlr", "kind": "float", "offset": 0.0, "scale": 1.0} ((v - offset) / scale).
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        if not isinstance(spec, dict) or spec.get("kind") not in ("class", "float") or "column" not in spec:
            raise ValueError(f"vqvae_prior: condition must be a mapping with column and kind class|float, got {spec!r}")
        self.column, self.kind = str(spec["column"]), spec["kind"]
        if self.kind == "class":
            if int(spec.get("num_classes", 0)) < 2:
                raise ValueError(f"vqvae_prior: class condition {self.column!r} needs num_classes >= 2")
            self.num_classes = int(spec["num_classes"])
        self.offset, self.scale = float(spec.get("offset", 0.0)), float(spec.get("scale", 1.0))

    @property
    def dim(self) -> int:
        """Length of the condition vector: num_classes (one-hot) or 1 (float)."""
        return self.num_classes if self.kind == "class" else 1

    def vector(self, values: Any, n: int, device: torch.device) -> torch.Tensor:
        """Condition vectors from a scalar or n values (batch column or CLI value).

        Parameters
        ----------
        values : scalar or array-like
            One value for all n, or n values: integer class labels, or floats in the column's units.
        n : int
            Number of objects.
        device : torch.device
            Where the vectors go.

        Returns
        -------
        torch.Tensor
            (n, dim) float32: one-hot classes, or (v − offset) / scale.

        Raises
        ------
        ValueError
            For a count other than n, non-integer class labels or labels outside [0, num_classes).
        """
        t = torch.as_tensor(values, device=device)
        if t.dim() == 0:
            t = t.expand(n)
        t = t.reshape(-1)
        if t.shape[0] != n:
            raise ValueError(f"condition {self.column!r}: {t.shape[0]} values for {n} objects")
        if self.kind == "float":
            return ((t.double() - self.offset) / self.scale).float().unsqueeze(1)
        if t.is_floating_point() and not torch.equal(t, t.round()):
            raise ValueError(f"condition {self.column!r}: class labels must be integers, got {t.tolist()[:5]}")
        t = t.long()
        if ((t < 0) | (t >= self.num_classes)).any():
            raise ValueError(f"condition {self.column!r}: class labels must be in [0, {self.num_classes}), "
                             f"got {sorted(set(t.tolist()))[:10]}")
        return F.one_hot(t, self.num_classes).float()


def _spec_to_tensor(spec: dict[str, Any]) -> torch.Tensor:
    return torch.tensor(list(yaml.safe_dump(spec, sort_keys=True).encode()), dtype=torch.uint8)


def _spec_from_tensor(t: torch.Tensor) -> dict[str, Any]:
    return load_yaml(bytes(t.tolist()).decode())


class VQVAEPrior(GalaxyModel):
    """A (conditional) gated PixelCNN over the code maps of a frozen, embedded VQ-VAE.

    params: vqvae_checkpoint (where the trained VQ-VAE lies: `galhpc.checkpoint.assemble_model`
    reads it and hands the built VQ-VAE in as `vqvae`; needed to start training, not to load a
    trained prior, whose state dict embeds the VQ-VAE), condition (see `Condition`; none for
    an unconditional prior), hidden (the PixelCNN's channels), layers, kernel, temperature
    (of sampling).
    """

    name = "vqvae_prior"
    generative = True

    def __init__(self, image_size: int = 64, channels: int = 1, latent_dim: int = 64, *,
                 vqvae_checkpoint: str | None = None, condition: dict[str, Any] | None = None,
                 hidden: int = 64, layers: int = 8, kernel: int = 5, temperature: float = 1.0,
                 vqvae: GalaxyModel | None = None) -> None:
        super().__init__()
        self.image_size, self.channels = image_size, channels
        self.vqvae_checkpoint = vqvae_checkpoint
        self.condition = Condition(condition) if condition is not None else None
        self.pixelcnn_options = dict(channels=hidden, layers=layers, kernel=kernel,
                                     cond_dim=self.condition.dim if self.condition else 0)
        self.temperature = temperature
        self.vqvae: GalaxyModel | None = None
        self.pixelcnn: GatedPixelCNN | None = None
        if vqvae is not None:
            self._attach(vqvae, vqvae.name)
        else:
            log.info("no VQ-VAE handed in (checkpoint %s): the prior waits for a state dict that embeds it",
                     vqvae_checkpoint)

    # -- the embedded VQ-VAE --
    def _attach(self, vqvae: GalaxyModel, name: str) -> None:
        """Embed a VQ-VAE (frozen) and build the PixelCNN for its codebook."""
        if (vqvae.image_size, vqvae.channels) != (self.image_size, self.channels):
            raise ValueError(f"vqvae_prior: the VQ-VAE takes {vqvae.channels}x{vqvae.image_size}^2 images, the prior's "
                             f"config says {self.channels}x{self.image_size}^2; make model.image_size/channels match")
        vqvae.requires_grad_(False)
        vqvae.eval()
        self.vqvae = vqvae
        spec = {"name": name, "image_size": vqvae.image_size, "channels": vqvae.channels,
                "latent_dim": vqvae.code_dim, "params": vqvae.rebuild_params()}
        self.register_buffer("vqvae_spec", _spec_to_tensor(spec))
        self.pixelcnn = GatedPixelCNN(vqvae.num_codes, **self.pixelcnn_options)

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True, assign: bool = False):
        """Rebuild the embedded VQ-VAE from the state dict's own spec, then load all weights.

        Parameters
        ----------
        state_dict : dict
            A prior's state dict, with its ``vqvae_spec`` buffer.
        strict, assign : bool
            As for `torch.nn.Module.load_state_dict`.

        Returns
        -------
        NamedTuple
            torch's missing and unexpected keys.

        Raises
        ------
        CheckpointError
            When the state dict embeds no VQ-VAE.
        """
        spec_tensor = state_dict.get("vqvae_spec")
        if spec_tensor is None:
            raise CheckpointError("vqvae_prior: the state dict has no embedded VQ-VAE (vqvae_spec)")
        current = getattr(self, "vqvae_spec", None)
        if current is None or not torch.equal(current.cpu(), spec_tensor.cpu()):
            from galhpc.config import ModelConfig
            from galhpc.models import build_model

            spec = _spec_from_tensor(spec_tensor)
            if current is not None:
                log.warning("vqvae_prior: %s differs from the VQ-VAE embedded in the loaded weights; using the "
                            "embedded one", self.vqvae_checkpoint)
            self._attach(build_model(ModelConfig(**spec)), spec["name"])
            if current is not None:
                self.to(current.device)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _require_vqvae(self) -> GalaxyModel:
        if self.vqvae is None:
            raise CheckpointError(f"vqvae_prior: VQ-VAE checkpoint not found: {self.vqvae_checkpoint} "
                                  "(set model.params.vqvae_checkpoint to a trained vqvae ckpt.pt)")
        return self.vqvae

    def train(self, mode: bool = True) -> VQVAEPrior:
        """Set training mode, keeping the embedded VQ-VAE in eval mode (frozen codebook).

        Parameters
        ----------
        mode : bool
            True for training, False for evaluation.

        Returns
        -------
        VQVAEPrior
            self.
        """
        super().train(mode)
        if self.vqvae is not None:
            self.vqvae.eval()  # frozen: no codebook EMA, usage or restarts
        return self

    # -- conditions --
    @property
    def sample_condition(self) -> SampleCondition | None:
        """What `sample(**conditions)` is conditioned on: the `Condition`'s kind and column, or None."""
        if self.condition is None:
            return None
        return SampleCondition(self.condition.kind, self.condition.column,
                               self.condition.num_classes if self.condition.kind == "class" else 0)

    @property
    def batch_columns(self) -> tuple[str, ...]:
        """The label column `loss` conditions on, for the trainer's loader to read."""
        return () if self.condition is None else (self.condition.column,)

    def _batch_condition(self, batch: Batch, n: int, device: torch.device) -> torch.Tensor | None:
        if self.condition is None:
            return None
        if self.condition.column not in batch:
            raise KeyError(f"vqvae_prior: the batch has no label column {self.condition.column!r} to condition on; "
                           f"columns: {sorted(batch)}")
        return self.condition.vector(batch[self.condition.column], n, device)

    def _sample_condition(self, n: int, conditions: dict[str, Any], device: torch.device) -> torch.Tensor | None:
        known = set() if self.condition is None else {self.condition.column}
        if self.condition is not None and self.condition.kind == "class":
            known.add("component")  # a class-conditional prior's classes are its components
        unknown = sorted(set(conditions) - known)
        if unknown:
            raise ValueError(f"vqvae_prior: unknown condition(s) {unknown}; this prior takes "
                             f"{sorted(known) or 'no conditions (it is unconditional)'}")
        if self.condition is None:
            return None
        values = conditions.get(self.condition.column, conditions.get("component"))
        if values is None:
            raise ValueError(f"vqvae_prior: this prior is conditional on {self.condition.column!r}; "
                             f"pass it, e.g. --condition {self.condition.column}=VALUE")
        return self.condition.vector(values, n, device)

    # -- the model interface --
    def encode(self, x: torch.Tensor) -> Encoding:
        """The embedded VQ-VAE's encoding.

        Parameters
        ----------
        x : torch.Tensor
            Stamps of the VQ-VAE's shape, float32, in stored units.

        Returns
        -------
        Encoding
            As `VQVAE.encode`: `mu` (B, D·h·w) quantised embeddings, `pose` or None.

        Raises
        ------
        CheckpointError
            When no VQ-VAE is embedded.
        """
        return self._require_vqvae().encode(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The embedded VQ-VAE's decoding.

        Parameters
        ----------
        z : torch.Tensor
            (B, D·h·w) quantised embeddings.

        Returns
        -------
        torch.Tensor
            (B, C, H, W) images before the PSF, stored units.

        Raises
        ------
        CheckpointError
            When no VQ-VAE is embedded.
        """
        return self._require_vqvae().decode(z)

    @property
    def reconstruct_columns(self) -> tuple[str, ...]:
        """The embedded VQ-VAE's `reconstruct_columns` (none before one is embedded)."""
        return () if self.vqvae is None else self.vqvae.reconstruct_columns

    def reconstruct(self, x: torch.Tensor, columns: Mapping[str, Any] | None = None, *,
                    encoding: Encoding | None = None) -> torch.Tensor:
        """The embedded VQ-VAE's reconstruction (PSF applied when it has a PSF layer).

        The prior models codes, not pixels, so its images are the VQ-VAE's.

        Parameters
        ----------
        x : torch.Tensor
            (B, C, H, W) images.
        columns : mapping, optional
            Passed on (``"psf"`` for a kind-store PSF layer).
        encoding : Encoding, optional
            Passed on.

        Returns
        -------
        torch.Tensor
            (B, C, H, W) in x's units.
        """
        return self._require_vqvae().reconstruct(x, columns, encoding=encoding)

    def loss(self, batch: Batch, state: StepState) -> LossOutput:
        """Cross-entropy of the PixelCNN on the frozen VQ-VAE's code maps of the batch (van den Oord et al. 2016).

        Parameters
        ----------
        batch : Batch
            ``"image"`` (B, C, H, W); the condition's label column for a conditional prior.
        state : StepState
            Unused.

        Returns
        -------
        LossOutput
            `total` = ``nll`` (nats per code, scalar); ``bits_per_code`` = nll / ln 2; no `recon`.

        Raises
        ------
        CheckpointError
            When no VQ-VAE is embedded.
        KeyError
            When a conditional prior's batch lacks its label column.
        """
        vqvae = self._require_vqvae()
        x = batch["image"]
        with torch.no_grad():
            codes = vqvae.codes(x)
        logits = self.pixelcnn(codes, self._batch_condition(batch, x.shape[0], x.device))
        nll = F.cross_entropy(logits, codes)
        return LossOutput(nll, {"nll": nll, "bits_per_code": nll.detach() / math.log(2)}, None)

    def forward(self, batch: Batch, state: StepState | None = None) -> LossOutput:
        """`loss(batch, state)` for module-calling wrappers.

        Parameters
        ----------
        batch : Batch
            See `loss`.
        state : StepState, optional
            Falls back to `StepState()`.

        Returns
        -------
        LossOutput
            `loss`'s output.
        """
        return self.loss(batch, state or StepState())

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, **conditions: Any) -> Samples:
        """Images decoded from sampled code maps.

        Parameters
        ----------
        n : int
            How many code maps to draw and decode.
        generator : torch.Generator, optional
            Source of the codes (and position angles for orient VQ-VAEs).
        **conditions
            ``column=value`` (or ``component=c`` for a class condition): required by a
            conditional prior, refused by an unconditional one.

        Returns
        -------
        Samples
            `images` (n, C, H, W) before the PSF; `z` the code indices (n, h·w) as float32;
            `component` (n,) int64, the class of a class-conditional prior, else −1.

        Raises
        ------
        ValueError
            For unknown or missing conditions.
        """
        vqvae = self._require_vqvae()
        device = self.pixelcnn.embedding.weight.device
        cond = self._sample_condition(n, conditions, device)
        codes = self.pixelcnn.sample(n, (vqvae.grid, vqvae.grid), cond, generator, self.temperature)
        pose = random_angles(n, generator, device) if vqvae.canon.orient else None
        images = vqvae.decode_codes(codes, pose)
        if self.condition is not None and self.condition.kind == "class":
            component = cond.argmax(dim=1)
        else:
            component = torch.full((n,), -1, dtype=torch.long, device=device)
        return Samples(images, codes.flatten(1).float(), component)
