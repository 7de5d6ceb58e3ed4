"""The on-disk format of a galhpc catalogue: names, suffixes, paths and the `Shard` type.

A catalogue is a master file plus one shard file per range of objects beside it
(docs/schema.md)::

    synth.h5                      master: virtual datasets over every shard, /meta attributes
    synth.h5.shards/manifest.json the run's fingerprint (which run the shards belong to)
    synth.h5.shards/000017.h5     shard 17: objects [start, stop), root attributes shard/start/stop

Writers (`galhpc.io.catalog_writer`, `galhpc.io.shards`) and the reader
(`galhpc.io.catalog`) both take every name and path from here, as desispec's ``findfile``
is the one place its file names are made.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

META = "meta"  # master group of the run's description (attributes)
TABLE = "catalog"  # a shard's compound dataset of every non-image column (astropy Table.read(path="catalog"))
MANIFEST = "manifest.json"  # in the shard directory: the run's fingerprint
SHARDS_SUFFIX = ".shards"  # <master><SHARDS_SUFFIX>/ holds the shard files
SHARD_SUFFIX = ".h5"
SHARD_GLOB = "[0-9]*" + SHARD_SUFFIX  # complete shard files (temporaries start with a dot)
FINGERPRINT_ATTR = "fingerprint"  # a shard's root attribute and a /meta key: the run's fingerprint (JSON)
SHARD_ATTR, START_ATTR, STOP_ATTR = "shard", "start", "stop"  # a shard's root attributes
IMAGES, IMAGES_CLEAN = "images", "images_clean"  # galhpc-generate: observed and noise-free stamps
IMAGE_COLUMNS = (IMAGES, IMAGES_CLEAN)  # columns kept out of the compound table

# the standard per-object columns of a galhpc-encode catalogue (docs/schema.md)
OBJECT_ID = "object_id"  # (N,) int64, the store's object id
MU = "mu"  # (N, L) float32, the latent mean
LOGVAR = "logvar"  # (N, L) float32, log σ² (encoders with one)
GAMMA = "gamma"  # (N, K) float32, mixture responsibilities
COMPONENT = "component"  # (N,) int16, argmax γ
RECON_MSE = "recon_mse"  # (N,) float32, reconstruction mean squared error
STANDARD_COLUMNS = (OBJECT_ID, MU, LOGVAR, GAMMA, COMPONENT, RECON_MSE)
# galhpc-generate: the latent drawn (N, L) float32, the per-object seed (N,) int64 and, with
# rejection sampling, the draws each accepted object took (N,) int64
Z, SEED, REJECTION_DRAWS = "z", "seed", "rejection_draws"
GMM_GROUP = "gmm"  # master group of the post-hoc GMM (GMM_KEYS and components_per_batch)
GMM_KEYS = ("log_pi", "mu", "var")  # its (K,) log weights, (K, L) means and (K, L) variances
GMM_FILE = "gmm.h5"  # in the shard directory: the post-hoc GMM every rank loads


@dataclass(frozen=True)
class Shard:
    """Objects [start, stop) of a catalogue, stored in shard file number `index`.

    Parameters
    ----------
    index : int
        The shard's number (its file ``NNNNNN.h5``).
    start, stop : int
        The catalogue rows (object indices) it holds, stop exclusive.
    path : Path, optional
        The file that holds them, where known (a catalogue being read).
    offset : int
        The row of that file's datasets holding catalogue row `start` (0 for a galhpc shard).
    """

    index: int
    start: int
    stop: int
    path: Path | None = None
    offset: int = 0

    @property
    def size(self) -> int:
        """Number of objects, ``stop - start``."""
        return self.stop - self.start


def shard_dir_for(master: str | Path) -> Path:
    """The shard directory of a master file: ``synth.h5`` -> ``synth.h5.shards``.

    Parameters
    ----------
    master : str or Path
        The master file.

    Returns
    -------
    Path
        Beside the master.
    """
    master = Path(master)
    return master.with_name(master.name + SHARDS_SUFFIX)


def shard_file_name(index: int) -> str:
    """The file name of shard number `index`: ``17`` -> ``000017.h5``.

    Parameters
    ----------
    index : int
        Shard number, >= 0.

    Returns
    -------
    str
    """
    return f"{index:06d}{SHARD_SUFFIX}"


def shard_path(shard_dir: str | Path, index: int) -> Path:
    """The file of shard number `index` in `shard_dir`.

    Parameters
    ----------
    shard_dir : str or Path
        The shard directory (`shard_dir_for`).
    index : int
        Shard number.

    Returns
    -------
    Path
    """
    return Path(shard_dir) / shard_file_name(index)


def manifest_path(shard_dir: str | Path) -> Path:
    """The manifest of a shard directory (``<shard_dir>/manifest.json``).

    Parameters
    ----------
    shard_dir : str or Path

    Returns
    -------
    Path
    """
    return Path(shard_dir) / MANIFEST
