"""Catalogue inference at scale: `galhpc-encode` and `galhpc-generate` into sharded HDF5.

shards.py  fixed object ranges, rank assignment, atomic shard files, resume/refuse rules
h5out.py   the one HDF5 writer: shard datasets, compound table, virtual master, /meta
driver.py  runs a job over the shards on every rank (a galhpc.runtime.world.World) and writes the master file
seeds.py   randomness keyed by (seed, object index)
generate.py, emulate.py, encode.py  the two jobs and survey emulation (PSF, noise)
"""
