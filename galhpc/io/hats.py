"""hats-import's input reader for a galhpc catalogue: its shard files read in bounded blocks.

hats-import (the HATS format's own importer) reads its input files through an
`InputReader` whose ``read(input_file)`` yields chunks; it runs one task per input file
on its Dask cluster (mapping, then splitting by HEALPix pixel).  `CatalogueShardReader`
takes a catalogue's shard files as those input files and yields each shard's rows,
`block_rows` at a time, read with `galhpc.open_catalog` (verified, from the shard files),
as pyarrow Tables: the scalar columns, vector columns one column per element
(``mu_0 … mu_{L-1}``) or as fixed-size lists, per-row columns joined from another table
(rarity scores), and ``shard``/``row``, where the object is in the HDF5 shard files (its
images stay there).  Memory is one block whatever N.

A catalogue without sky positions (galhpc-generate's) can be given positions drawn
uniformly on the sphere within a region (`sky_positions`: seeded by the seed and the
shard's index, so both of hats-import's passes over a shard see the same positions).

Imports hats-import: use it only where the ``[hats]`` extra is installed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
from hats_import.catalog.file_readers.input_reader import InputReader

from galhpc.io.catalog import open_catalog

SHARD, ROW = "shard", "row"  # where each object is: row ROW of shard file SHARD (<master>.shards/NNNNNN.h5)


def sky_positions(region: Sequence[float], seed: int, shard: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of a shard's objects, uniform on the sphere within an RA/Dec box.

    Parameters
    ----------
    region : sequence of 4 float
        ``(ra_min, ra_max, dec_min, dec_max)`` in degrees, ``0 <= ra_min < ra_max <= 360``,
        ``-90 <= dec_min < dec_max <= 90``.
    seed : int
        The draw's seed (with `shard`: the same positions every time).
    shard : int
        Index of the shard whose objects these are.
    n : int
        Objects in the shard.

    Returns
    -------
    ra, dec : numpy.ndarray
        Shape (n,) float64, degrees: RA uniform in [ra_min, ra_max), sin(Dec) uniform in
        [sin(dec_min), sin(dec_max)) (equal area).
    """
    ra_min, ra_max, dec_min, dec_max = (float(v) for v in region)
    rng = np.random.default_rng([int(seed), int(shard)])
    ra = rng.uniform(ra_min, ra_max, n)
    dec = np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(dec_min)), np.sin(np.radians(dec_max)), n)))
    return ra, np.clip(dec, dec_min, dec_max)


class CatalogueShardReader(InputReader):
    """Yield a galhpc catalogue's rows, shard file by shard file, as pyarrow Tables.

    Parameters
    ----------
    master : str or Path
        The catalogue's master file.
    columns : sequence of str
        Catalogue columns to export (scalars and vectors).
    schema : pyarrow.Schema
        The exported schema (`galhpc.io.export.arrow_schema` with split vectors) plus
        ``shard`` (int32) and ``row`` (int64).
    block_rows : int
        Most rows per Table yielded (memory bound of a hats-import task).
    split_vectors : bool
        Vector columns as one column per element (else fixed-size lists).
    extra : str or Path, optional
        A ``.npy`` file of one structured row per catalogue row (e.g. rarity scores), its
        fields exported as columns too; read memory-mapped, a block at a time.
    sky : tuple of (float, float, float, float, int), optional
        ``(ra_min, ra_max, dec_min, dec_max, seed)``: export ``ra``/``dec`` drawn by
        `sky_positions` (for a catalogue without positions).
    """

    def __init__(self, master: str | Path, columns: Sequence[str], schema: pa.Schema, block_rows: int,
                 split_vectors: bool = True, extra: str | Path | None = None,
                 sky: tuple[float, float, float, float, int] | None = None) -> None:
        self.master = str(master)
        self.columns = list(columns)
        self.schema = schema
        self.block_rows = int(block_rows)
        self.split_vectors = split_vectors
        self.extra = None if extra is None else str(extra)
        self.sky = sky

    def read(self, input_file, read_columns: Sequence[str] | None = None) -> Iterator[pa.Table]:
        """The rows of shard file `input_file`, `block_rows` at a time.

        Parameters
        ----------
        input_file : path-like
            One shard file of the catalogue (hats-import's input file).
        read_columns : sequence of str, optional
            Exported columns to read (hats-import asks for ra/dec only while mapping).

        Yields
        ------
        pyarrow.Table
            At most `block_rows` rows of the exported schema (or of `read_columns`).
        """
        from galhpc.io.export import export_names

        path = os.path.realpath(os.fspath(input_file))
        labels = self.schema.names if read_columns is None else list(read_columns)
        with open_catalog(self.master, max_open=1) as cat:
            found = [s for s in cat.shards if os.path.realpath(s.path) == path]
            if not found:
                raise FileNotFoundError(f"{input_file} is not a shard file of {self.master}")
            shard = found[0]
            exported = {label: (name, element)
                        for label, name, element in export_names(cat, self.columns, self.split_vectors)}
            extra = np.load(self.extra, mmap_mode="r") if self.extra else None
            names = sorted({exported[label][0] for label in labels if label in exported})
            drawn = {}
            if self.sky is not None:
                drawn = dict(zip(("ra", "dec"), sky_positions(self.sky[:4], self.sky[4], shard.index, shard.size),
                                 strict=True))
            for lo in range(shard.start, shard.stop, self.block_rows):
                hi = min(lo + self.block_rows, shard.stop)
                values = {n: cat.read(n, slice(lo, hi)) for n in names}
                arrays = []
                for label in labels:
                    if label == SHARD:
                        v = np.full(hi - lo, shard.index, np.int32)
                    elif label == ROW:
                        v = np.arange(lo - shard.start + shard.offset, hi - shard.start + shard.offset, dtype=np.int64)
                    elif label in drawn:
                        v = drawn[label][lo - shard.start:hi - shard.start]
                    elif label not in exported:  # a field of `extra`
                        v = np.ascontiguousarray(extra[lo:hi][label])
                    else:
                        name, element = exported[label]
                        v = values[name] if element is None else values[name][:, element]
                        v = v.astype(np.float32) if v.dtype == np.float16 else v
                        v = np.char.decode(v, "utf-8") if v.dtype.kind == "S" else np.ascontiguousarray(v)
                    kind = self.schema.field(label).type
                    if v.ndim == 2:  # a vector column as fixed-size lists
                        arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1), kind.value_type),
                                                                        v.shape[1]))
                    else:
                        arrays.append(pa.array(v, type=kind))
                yield pa.Table.from_arrays(arrays, schema=pa.schema([self.schema.field(label) for label in labels]))
