"""Fidelity of generated galaxies: do they pass for real?

`morphology` (per-stamp statistics: statmorph, flux, size–flux, power spectrum, measured in
parallel), `compare` (KS/Wasserstein with bootstrap errors, the classifier two-sample test,
the memorisation check), `score` (the whole test beside the real-vs-real floor, its table),
`figures`, `sources` (generated, held-out real and training stamps) and `run` (the
`galhpc-fidelity` job).
"""
