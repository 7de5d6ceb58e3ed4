"""The floors of galhpc, lowest first: a module may import only from its own package or a lower floor.

The one place the order is written; `tests/test_layers.py` checks every import against it
and docs/architecture.md explains it.  Names are top-level modules or packages of galhpc
(the package root `galhpc` itself holds only the version).
"""

from __future__ import annotations

FLOORS: tuple[tuple[str, ...], ...] = (
    # version (+ lazy public API), compiled extension, this table; the process group, files,
    # errors, CLI wrapper, batched model calls, process helpers
    ("galhpc", "_ext", "layers", "runtime"),
    # run schema; KL terms; compute kernels (PSF FFT, codebook); optional packages
    # (MissingExtraError is a GalhpcError); on-disk formats (names, paths, Shard, read-only open)
    ("config", "priors", "kernels", "extras", "formats"),
    # sources, preprocessing, the training store and its loader; Gaussian mixtures and their scores
    ("data", "mixture"),
    # nn.Modules behind GalaxyModel (read no files); reading and writing stores and catalogues
    ("models", "io"),
    # model files (built with collaborators) and the one load_model
    ("checkpoint",),
    # the trainer and backends; catalogue inference jobs (encode, generate, star/galaxy); public API
    ("train", "inference", "api"),
    # similarity search and rarity scores over encoded catalogues; generated-vs-real statistics
    ("search", "fidelity"),
    # the report's sections, figures and metrics
    ("report",),
    # entry points: parse arguments, call the floors below; the submitit launcher
    ("cli", "submit"),
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
