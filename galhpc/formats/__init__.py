"""galhpc's on-disk formats, one module each: the names, suffixes and path helpers that writers and readers share.

hdf5.py     `open_h5_readonly` (no file locks), `H5Output` (safe on a full disk), and the one
            "rows in any order -> sorted unique read -> inverse" step (`read_rows`)
catalog.py  a catalogue: master/shard/manifest names and paths, the `Shard` type
store.py    a training store: dataset and attribute names
table.py    a search/rarity table: suffixes and column names
kinds.py    the ``galhpc_kind`` root attribute every file records, and the checks on it

Imports numpy, h5py and `galhpc.runtime` only (never torch).
"""
