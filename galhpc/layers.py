"""The floors of galhpc, lowest first: a module may import only from its own package or a lower floor.

The one place the order is written; `tests/test_layers.py` checks every import against it
and docs/architecture.md explains it.  Names are top-level modules or packages of galhpc
(the package root `galhpc` itself holds only the version).
"""

from __future__ import annotations

FLOORS: tuple[tuple[str, ...], ...] = (
    ("galhpc", "_ext", "layers", "runtime"),  # version (+ lazy public API), compiled extension, this table; world, files, errors, cli wrapper, inference, process helpers
    ("config", "priors", "kernels", "extras", "formats"),  # run schema; KL terms; compute kernels (PSF FFT, codebook); optional packages (MissingExtraError is a GalhpcError); on-disk formats (names, paths, Shard, read-only open)
    ("data", "mixture"),             # sources, preprocessing, the store and its loader; Gaussian mixtures (diagonal, stick-breaking) and their scores
    ("models", "io"),                # nn.Modules behind GalaxyModel (read no files); reading and exporting stores and catalogues
    ("checkpoint",),                 # model files (build with collaborators)
    ("train", "inference", "api"),   # the trainer and backends; catalogue inference jobs (encode, generate, star/galaxy); load_model
    ("search", "fidelity"),          # similarity search and rarity scores over encoded catalogues; generated-vs-real statistics
    ("report",),                     # figures and metrics
    ("cli", "submit"),               # entry points: parse arguments, call the floors below; the submitit launcher
)


def floor_of(name: str) -> int:
    """Floor index of a top-level galhpc module/package name (``"train"``, ``"runtime"``).

    Parameters
    ----------
    name : str
        A top-level module or package of galhpc, without the ``galhpc.`` prefix.

    Returns
    -------
    int
        Its index in `FLOORS` (0: the lowest floor).

    Raises
    ------
    KeyError
        If `name` is on no floor.
    """
    for index, names in enumerate(FLOORS):
        if name in names:
            return index
    raise KeyError(f"galhpc.{name} is on no floor of galhpc/layers.py: add it there and to docs/architecture.md")
