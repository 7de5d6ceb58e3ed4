"""Per-object rarity scores of an encoded catalogue: which objects are unusual, three ways.

- `nll_prior`: -log p(μ) under the latent density the model itself assumes: its mixture
  prior (log-sum-exp over components) for mixture models, else the catalogue's post-hoc
  GMM fitted on the latents (`/gmm` of the master), else N(0, I).
- `knn_distance`: Euclidean distance from μ to its k-th nearest neighbour (itself left
  out) among a reference set of catalogue rows (every row up to `reference` rows, else an
  evenly strided sample of that many), searched exactly with `galhpc.search.topk`.  A
  large distance = a sparse neighbourhood.
- `recon_chi2`: reconstruction χ² per pixel, `recon_mse` / σ², with σ the per-object
  pixel noise of the store (NaN when no noise is known).

Higher is rarer for all three.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from galhpc.formats import catalog as C
from galhpc.formats import table as T
from galhpc.formats.kinds import RARITY_TABLE
from galhpc.io.table import write_table
from galhpc.priors import gmm_log_joint
from galhpc.search.output import table_units
from galhpc.search.source import CatalogColumns
from galhpc.search.topk import search_blocks

log = logging.getLogger("galhpc.search.rarity")

@dataclass
class LatentPrior:
    """A diagonal Gaussian mixture on the latents: log weights (K,), means and variances (K, L)."""

    log_pi: np.ndarray
    mu: np.ndarray
    var: np.ndarray
    source: str


def latent_prior(model: torch.nn.Module | None, gmm: dict[str, np.ndarray] | None, latent_dim: int) -> LatentPrior:
    """The latent density rarity is scored under: the model's mixture prior, else `gmm`, else N(0, I).

    Parameters
    ----------
    model : torch.nn.Module, optional
        The catalogue's model; used when it has a mixture prior (``has_mixture``, with
        ``log_pi`` (K,), ``mu_c`` and ``var_c`` (K, L), as in VaDE, Jiang et al. 2017).
    gmm : dict of str to numpy.ndarray, optional
        A catalogue's /gmm group: ``log_pi`` (K,), ``mu`` and ``var`` (K, L).
    latent_dim : int
        L, for the N(0, I) fallback.

    Returns
    -------
    LatentPrior
        float64 log weights, means and variances, and a label saying which was used.
    """
    if model is not None and getattr(model, "has_mixture", False):
        with torch.no_grad():
            return LatentPrior(model.log_pi.double().numpy(), model.mu_c.double().numpy(),
                               model.var_c.double().numpy(), "model mixture prior")
    if gmm is not None:
        log_pi, mu, var = (np.asarray(gmm[key], np.float64) for key in C.GMM_KEYS)
        return LatentPrior(log_pi, mu, var, "GMM fitted on the latents")
    return LatentPrior(np.zeros(1), np.zeros((1, latent_dim)), np.ones((1, latent_dim)), "N(0, I)")


def prior_nll(mu: np.ndarray, prior: LatentPrior, chunk: int = 4096) -> np.ndarray:
    """-log p(μ) under a diagonal GMM (log-sum-exp over components), in nats.

    Parameters
    ----------
    mu : numpy.ndarray
        (N, L) latent vectors.
    prior : LatentPrior
        The diagonal Gaussian mixture.
    chunk : int, optional
        Rows evaluated at a time (memory: chunk x K x L float64).

    Returns
    -------
    numpy.ndarray
        (N,) float64 negative log density.
    """
    args = [torch.from_numpy(np.asarray(a, np.float64)) for a in (prior.log_pi, prior.mu, prior.var)]
    z = torch.from_numpy(np.asarray(mu, np.float64))
    parts = [-torch.logsumexp(gmm_log_joint(part, *args), dim=1) for part in z.split(chunk)]
    return torch.cat(parts).numpy() if parts else np.zeros(0)


def reference_rows(n: int, reference: int) -> np.ndarray:
    """All rows when n <= reference, else `reference` evenly strided rows.

    Parameters
    ----------
    n : int
        Catalogue rows.
    reference : int
        Most reference rows wanted.

    Returns
    -------
    numpy.ndarray
        Sorted int64 rows: arange(n), or linspace(0, n - 1, reference) truncated to integers.
    """
    return np.arange(n, dtype=np.int64) if n <= reference else np.linspace(0, n - 1, reference).astype(np.int64)


def knn_distance(mu: np.ndarray, rows: np.ndarray, ref: np.ndarray, ref_rows: np.ndarray, k: int) -> np.ndarray:
    """Euclidean distance from each μ to its k-th nearest reference vector, itself excluded.

    Parameters
    ----------
    mu : numpy.ndarray
        (N, L) latent vectors.
    rows : numpy.ndarray
        (N,) int64 catalogue rows of `mu` (a row also in `ref_rows` is excluded from its own search).
    ref : numpy.ndarray
        (M, L) reference vectors.
    ref_rows : numpy.ndarray
        (M,) sorted int64 catalogue rows of `ref`.
    k : int
        Which neighbour's distance (1: the nearest other row).

    Returns
    -------
    numpy.ndarray
        (N,) float64 distances in latent units (inf where fewer than k reference rows remain).
    """
    pos = np.searchsorted(ref_rows, rows)
    pos = np.minimum(pos, len(ref_rows) - 1)
    exclude = np.where(ref_rows[pos] == rows, pos, -1)
    found = search_blocks(mu, [(0, ref)], k, exclude=exclude)
    return found.distance[:, -1]


def rarity_scores(catalog_path: str | Path, out: str | Path, *, k: int = 10, reference: int = 200_000,
                  model: torch.nn.Module | None = None,
                  noise: Callable[[np.ndarray], np.ndarray] | None = None, block_rows: int = 8192,
                  world=None) -> dict[str, np.ndarray]:
    """Score every object of a catalogue and write the table `out` (rank 0).

    Parameters
    ----------
    catalog_path : str or pathlib.Path
        An encoded catalogue (mu, object_id; recon_mse for recon_chi2).
    out : str or pathlib.Path
        Table path (.h5/.hdf5, .fits, .csv): object_id, row, component, the `RARITY_SCORES`, then
        the store columns the catalogue carries (`CatalogColumns.carried`: ra, dec, ...).
    k : int, optional
        Neighbour whose distance is `knn_distance` (cut to the reference rows - 1).
    reference : int, optional
        Most reference rows for the neighbour search (held in memory on every rank).
    model : torch.nn.Module, optional
        The catalogue's model, for its mixture prior (None: /gmm or N(0, I)).
    noise : callable, optional
        Catalogue rows (B,) int64 -> per-pixel noise σ (B,) in the units of the stored
        images; None leaves recon_chi2 NaN.
    block_rows : int, optional
        Rows scored at a time.
    world : galhpc.runtime.world.World, optional
        The run's World; each rank scores its shards, rank 0 gathers and writes
        (default: `mpi_world()`).

    Returns
    -------
    dict of np.ndarray
        The table's columns (on every rank), rows in catalogue order.
    """
    from galhpc.runtime.world import mpi_world

    world = world or mpi_world()
    with CatalogColumns(catalog_path) as catalog:
        ref_rows = reference_rows(len(catalog), reference)
        ref = catalog.read(C.MU, ref_rows).astype(np.float64)
        prior = latent_prior(model, catalog.groups.get(C.GMM_GROUP), ref.shape[1])
        kk = min(k, len(ref_rows) - 1)
        parts = []
        for lo, mu in catalog.rank_blocks(C.MU, world.rank, world.size, block_rows):
            rows = np.arange(lo, lo + len(mu), dtype=np.int64)
            chi2 = np.full(len(rows), np.nan)
            if noise is not None and C.RECON_MSE in catalog.columns:
                chi2 = catalog.read(C.RECON_MSE, rows).astype(np.float64) / np.asarray(noise(rows), np.float64) ** 2
            parts.append({T.ROW: rows, T.NLL_PRIOR: prior_nll(mu, prior),
                          T.KNN_DISTANCE: knn_distance(mu, rows, ref, ref_rows, kk), T.RECON_CHI2: chi2})
        gathered = [p for rank_parts in world.allgather_object(parts) for p in rank_parts]
        gathered.sort(key=lambda p: p[T.ROW][0])
        table = {name: np.concatenate([p[name] for p in gathered]) for name in (T.ROW, *T.RARITY_SCORES)}
        rows = table[T.ROW]
        table[C.OBJECT_ID] = catalog.read(C.OBJECT_ID, rows) if C.OBJECT_ID in catalog.columns else rows.copy()
        table[C.COMPONENT] = (catalog.read(C.COMPONENT, rows).astype(np.int64) if C.COMPONENT in catalog.columns
                              else np.full(len(rows), -1, np.int64))
        table = {name: table[name] for name in (C.OBJECT_ID, T.ROW, C.COMPONENT, *T.RARITY_SCORES)}
        table.update({name: catalog.read(name, rows) for name in catalog.carried})
        if world.is_root:
            write_table(out, table, {"catalog": str(catalog_path), "k": str(kk), "reference_rows": str(len(ref_rows)),
                                     "prior": prior.source}, units=table_units(table, catalog.meta), kind=RARITY_TABLE)
            log.info("wrote %s: %d objects, prior %s, k=%d among %d reference rows", out, len(rows), prior.source, kk,
                     len(ref_rows))
        return table
