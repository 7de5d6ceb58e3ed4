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
    """Move every row one down (row 0 becomes zeros): row i then only sees rows < i."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1, :]


def shift_right(x: torch.Tensor) -> torch.Tensor:
    """Move every column one right (column 0 becomes zeros)."""
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
        a, b = x.chunk(2, dim=1)
        return torch.tanh(a) * torch.sigmoid(b)

    def forward(self, v: torch.Tensor, h: torch.Tensor, cond: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
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
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.ReLU(), nn.Conv2d(channels, num_codes, 1))

    def forward(self, codes: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embedding(codes).permute(0, 3, 1, 2)
        v, h = x, x
        for layer in self.layers:
            v, h = layer(v, h, cond)
        return self.head(h)

    @torch.no_grad()
    def sample(self, n: int, shape: tuple[int, int], cond: torch.Tensor | None = None,
               generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        """Code maps (n, h, w) drawn in raster order, one forward pass per position."""
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
        return self.num_classes if self.kind == "class" else 1

    def vector(self, values: Any, n: int, device: torch.device) -> torch.Tensor:
        """Condition vectors (n, dim) from a scalar or n values (batch column or CLI value)."""
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
    trained prior, whose state dict embeds the VQ-VAE), condition (see `Condition`; none for an unconditional prior), channels,
    layers, kernel, temperature (of sampling).
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
        """Rebuild the embedded VQ-VAE from the state dict's own spec, then load all weights."""
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
        super().train(mode)
        if self.vqvae is not None:
            self.vqvae.eval()  # frozen: no codebook EMA, usage or restarts
        return self

    # -- conditions --
    @property
    def sample_condition(self) -> SampleCondition | None:
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
        return self._require_vqvae().encode(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self._require_vqvae().decode(z)

    @property
    def reconstruct_columns(self) -> tuple[str, ...]:
        return () if self.vqvae is None else self.vqvae.reconstruct_columns

    def reconstruct(self, x: torch.Tensor, columns: Mapping[str, Any] | None = None, *,
                    encoding: Encoding | None = None) -> torch.Tensor:
        """The embedded VQ-VAE's reconstruction (PSF applied when it has a PSF layer): the
        prior models codes, not pixels, so its images are the VQ-VAE's.
        """
        return self._require_vqvae().reconstruct(x, columns, encoding=encoding)

    def loss(self, batch: Batch, state: StepState) -> LossOutput:
        vqvae = self._require_vqvae()
        x = batch["image"]
        with torch.no_grad():
            codes = vqvae.codes(x)
        logits = self.pixelcnn(codes, self._batch_condition(batch, x.shape[0], x.device))
        nll = F.cross_entropy(logits, codes)
        return LossOutput(nll, {"nll": nll, "bits_per_code": nll.detach() / math.log(2)}, None)

    def forward(self, batch: Batch, state: StepState | None = None) -> LossOutput:
        return self.loss(batch, state or StepState())

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, **conditions: Any) -> Samples:
        """N images decoded from sampled code maps; z holds the code indices (n, h*w) as floats."""
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
