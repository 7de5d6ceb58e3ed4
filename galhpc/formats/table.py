"""The on-disk format of galhpc-search and galhpc-rarity result tables.

A table is equal-length 1-D columns written as HDF5 (one dataset per column, its unit in
attribute `UNIT_ATTR`, root attribute ``galhpc_kind``), FITS (a binary table, TUNITn) or
CSV (a header line), chosen by the file's suffix.  The writer and reader are
`galhpc.io.table`; `galhpc.formats.kinds` recognises an old table by `SEARCH_COLUMNS` /
`RARITY_COLUMN`.
"""

from __future__ import annotations

HDF5_SUFFIXES = (".h5", ".hdf5")
FITS_SUFFIXES = (".fits", ".fit")
CSV_SUFFIXES = (".csv",)
TABLE_SUFFIXES = HDF5_SUFFIXES + FITS_SUFFIXES + CSV_SUFFIXES
UNIT_ATTR = "unit"  # a column's unit (astropy string) on its HDF5 dataset
SEARCH_COLUMNS = ("query", "distance")  # columns every search table holds
RARITY_COLUMN = "nll_prior"  # the column every rarity table holds
