"""Catalogue inference at scale: `galhpc-encode` and `galhpc-generate` into sharded HDF5.

options.py the stages' option objects (OutputOptions, EncodeOptions, GenerateOptions): flags, fingerprint, /meta record
job.py     open_job: the rank, device and checkpoint model both stages start from
driver.py  runs a job over the shards on every rank (a galhpc.runtime.world.World) and writes the master file
seeds.py   randomness keyed by (seed, object index)
generate.py, emulate.py, encode.py  the two jobs and survey emulation (PSF, noise)

The shards (galhpc.io.shards) and the one HDF5 writer (galhpc.io.catalog_writer) are in galhpc.io.
"""
