"""Reading and writing galhpc's files: the one layer above `galhpc.formats` that touches HDF5.

catalog.py         `Catalog` / `open_catalog`: a catalogue read from its shard files directly,
                   verified, with a bounded number of open files; its small groups (`read_group`)
catalog_writer.py  the one HDF5 writer of catalogues: shard files (`ShardWriter`), the virtual
                   master (`write_master`), /meta, the post-hoc GMM file
shards.py          shards of a run: rank partition, resumable shard files, the manifest
store.py           `Store` / `open_store`: a training store read-only (`read_columns(names, rows)`)
table.py           search/rarity result tables (HDF5, FITS or CSV by suffix)
columns.py         what each catalogue column means (units and descriptions for tables)
export.py          a catalogue to a FITS binary table or to Parquet, shard by shard
hats.py            hats-import's reader of a catalogue's shard files (HATS export)
reader.py          `Reader`: the ``with`` protocol of `Catalog` and `Store` (close at the end)

Names, suffixes and paths of every format are `galhpc.formats`.  Importing this package
imports h5py and numpy only (never torch).
"""
