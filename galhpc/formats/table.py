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
# a search table: one row per (query, neighbour), then the neighbour's carried catalogue columns
QUERY, QUERY_LABEL, QUERY_ID = "query", "query_label", "query_id"  # the query's number, label and object id
RANK, NEIGHBOUR_ID, ROW, DISTANCE = "rank", "id", "row", "distance"  # 1 = nearest; its id, catalogue row, distance
SEARCH_COLUMNS = (QUERY, DISTANCE)  # columns every search table holds
# a rarity table: one row per catalogue object (object_id, ROW, component, then these scores)
NLL_PRIOR, KNN_DISTANCE, RECON_CHI2 = "nll_prior", "knn_distance", "recon_chi2"
RARITY_SCORES = (NLL_PRIOR, KNN_DISTANCE, RECON_CHI2)
RARITY_COLUMN = NLL_PRIOR  # the column every rarity table holds
