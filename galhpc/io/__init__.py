"""Reading and exporting galhpc's files, apart from the classes that make them.

catalog.py  `Catalog` / `open_catalog`: a catalogue read from its shard files directly,
            verified, with a bounded number of open files
columns.py  what each catalogue column means (units and descriptions for tables)
export.py   a catalogue to a FITS binary table or to Parquet, shard by shard
store.py    `Store` / `open_store`: a training store read-only, without file locks
reader.py   `Reader`: the ``with`` protocol of `Catalog` and `Store` (close at the end)

Importing this package imports h5py and numpy only (never torch).
"""
