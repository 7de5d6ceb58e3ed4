"""Similarity search and rarity scores over encoded catalogues (`galhpc-search`, `galhpc-rarity`).

- `topk`: exact blocked top-k over (first_row, block) iterators, merged across ranks.
- `source`: a catalogue's columns, shard by shard, for the rank that searches them.
- `query`: query latents from catalogue object ids or from images encoded with the checkpoint.
- `output`: the result table (HDF5, FITS or CSV) and the PNG mosaic.
- `rarity`: per-object scores that rank unusual objects.
"""
