"""Write and read the result tables of galhpc-search and galhpc-rarity (HDF5, FITS or CSV by suffix).

The format's names are `galhpc.formats.table`; a table's rows are written under a
temporary name and renamed (`galhpc.runtime.files.atomic_path`), so no half-written table
is ever visible.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np

from galhpc.formats.hdf5 import open_h5_readonly
from galhpc.formats.kinds import KIND_ATTR, SEARCH_TABLE
from galhpc.formats.table import FITS_SUFFIXES, HDF5_SUFFIXES, TABLE_SUFFIXES, UNIT_ATTR
from galhpc.runtime.errors import DataError
from galhpc.runtime.files import atomic_path


def write_table(path: str | Path, columns: Mapping[str, np.ndarray], attrs: Mapping[str, str] | None = None,
                units: Mapping[str, str] | None = None, kind: str = SEARCH_TABLE) -> Path:
    """Write equal-length 1-D columns to `path`, the format chosen by its suffix.

    .h5/.hdf5: one dataset per column, its unit in attribute ``unit``, root attribute
    ``galhpc_kind`` = `kind`; .fits/.fit: a binary table with TUNITn; .csv: a header line.

    Parameters
    ----------
    path : str or Path
        The table to write (replaced atomically).
    columns : mapping of str to numpy.ndarray
        Each shape (n,); str columns are stored as bytes.
    attrs : mapping of str to str, optional
        Root attributes (HDF5) or header keywords (FITS); not written to CSV.
    units : mapping of str to str, optional
        The unit (astropy string, e.g. ``"deg"``) of each column that has one.
    kind : str
        The ``galhpc_kind`` of an HDF5 table (`galhpc.formats.kinds`).

    Returns
    -------
    Path
        The table written, `path`.

    Raises
    ------
    DataError
        An unknown suffix (not one of `galhpc.formats.table.TABLE_SUFFIXES`).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataError(f"{path}: unknown table format; use one of {', '.join(TABLE_SUFFIXES)}")
    with atomic_path(path) as tmp:
        if suffix in HDF5_SUFFIXES:
            with h5py.File(tmp, "w") as f:
                for name, values in columns.items():
                    f.create_dataset(name, data=_plain(values))
                    if name in (units or {}):
                        f[name].attrs[UNIT_ATTR] = units[name]
                f.attrs.update(dict(attrs or {}))
                f.attrs[KIND_ATTR] = kind
        elif suffix in FITS_SUFFIXES:
            from astropy.table import Table

            table = Table({name: _plain(values) for name, values in columns.items()}, meta=dict(attrs or {}))
            for name, unit in (units or {}).items():
                table[name].unit = unit
            table.write(tmp, format="fits")
        else:
            names = list(columns)
            rows = zip(*(np.asarray(columns[n]).tolist() for n in names), strict=False)
            with open(tmp, "w") as fh:
                fh.write(",".join(names) + "\n")
                fh.writelines(",".join(_csv_cell(v) for v in row) + "\n" for row in rows)
    return path


def read_table(path: str | Path) -> dict[str, np.ndarray]:
    """Columns of a table written by `write_table`.

    Parameters
    ----------
    path : str or Path
        An .h5/.hdf5, .fits/.fit or .csv table.

    Returns
    -------
    dict of str to numpy.ndarray
        Each column, shape (n,) (HDF5 strings as bytes, CSV types inferred).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in HDF5_SUFFIXES:
        with open_h5_readonly(path) as f:
            return {name: f[name][()] for name in f}
    if suffix in FITS_SUFFIXES:
        from astropy.table import Table

        table = Table.read(path)
        return {name: np.asarray(table[name]) for name in table.colnames}
    data = np.genfromtxt(path, delimiter=",", names=True, dtype=None, encoding="utf-8")
    return {name: np.atleast_1d(data[name]) for name in data.dtype.names}


def _plain(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    return values.astype("S") if values.dtype.kind == "U" else values


def _csv_cell(value: object) -> str:
    text = repr(value) if isinstance(value, float) else str(value)
    return f'"{text}"' if "," in text else text
