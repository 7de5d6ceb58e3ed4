"""The whole `galhpc-fidelity` job: read the three sets, score, write the table and figures."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from galhpc.fidelity import sources
from galhpc.fidelity.score import FidelityResult, score, write_outputs
from galhpc.runtime.errors import DataError

log = logging.getLogger("galhpc.fidelity")


@dataclass(frozen=True)
class FidelityOptions:
    """Sample sizes and knobs of one fidelity test."""

    n_generated: int = 500
    n_real: int = 500
    n_training: int = 2000  # training stamps searched for each stamp's nearest neighbour
    n_boot: int = 200
    processes: int = 1
    seed: int = 0
    folds: int = 5
    component: int | None = None  # draw one mixture component / class only
    batch_size: int = 256
    figures: bool = True


def run_fidelity(out: str | Path, options: FidelityOptions, *, checkpoint: str | Path | None = None,
                 synth: str | Path | None = None, store: str | Path | None = None,
                 real_store: str | Path | None = None) -> tuple[FidelityResult, dict[str, Path]]:
    """Score a generator's stamps against held-out real ones and write `out/`.

    Parameters
    ----------
    out : str or Path
        Output directory (fidelity.fits/.csv/.json, stamps.fits, histograms.png, nearest.png).
    options : FidelityOptions
        Sample sizes, bootstrap, processes, seed.
    checkpoint : str or Path, optional
        Draw generated stamps from this model (and take its training store, seed and
        holdout fraction for the real and training sets).
    synth : str or Path, optional
        Take generated stamps from this `galhpc-generate` catalogue instead.
    store : str or Path, optional
        The training store (default: the checkpoint's).  Its held-out rows are the real
        set unless `real_store` is given; its training rows are searched for memorisation.
    real_store : str or Path, optional
        Every row of this store is the real set (a separate simulation or survey set).

    Returns
    -------
    (FidelityResult, {name: path written})

    Raises
    ------
    DataError
        When neither or both of `checkpoint` and `synth`, no store is known, or the sets differ in stamp size.
    """
    from galhpc.checkpoint import load_model

    if (checkpoint is None) == (synth is None):
        raise DataError("give exactly one of a checkpoint (to sample) or a synth.h5 catalogue")
    rng = np.random.default_rng(options.seed)
    holdout_fraction, split_seed, model = 0.1, 0, None
    if checkpoint is not None:
        model, cfg, _ = load_model(checkpoint, map_location="cpu")
        store = store or cfg.train.store
        holdout_fraction, split_seed = cfg.train.holdout_fraction, cfg.train.seed
    if store is None:
        raise DataError("no training store: give --store (a synth.h5 does not name one)")
    train_rows, held_rows = sources.split_store(store, holdout_fraction, split_seed)
    if real_store is not None:
        with sources.open_store(real_store) as s:
            n_real_rows = len(s)
        real = sources.read_store_stamps(real_store, np.arange(n_real_rows), options.n_real, rng, "all rows")
    else:
        if len(held_rows) == 0:
            raise DataError(f"{store}: no held-out rows (holdout_fraction {holdout_fraction}); give --real-store")
        real = sources.read_store_stamps(store, held_rows, options.n_real, rng, "held-out rows")
    training = sources.read_store_stamps(store, train_rows, options.n_training, rng, "training rows")
    if model is not None:
        generated = sources.sample_model(model, options.n_generated, options.seed, options.batch_size,
                                         options.component)
    else:
        generated = sources.read_catalogue_images(synth, options.n_generated, rng)
    if generated.images.shape[1:] != real.images.shape[1:]:
        raise DataError(f"generated stamps {generated.images.shape[1:]} ({generated.source}) and real stamps "
                        f"{real.images.shape[1:]} ({real.source}) differ: score them at one stamp size")
    log.info("fidelity: generated %s, real %s, training %s", generated.source, real.source, training.source)
    result = score(generated.images, real.images, training.images, n_boot=options.n_boot,
                   processes=options.processes, seed=options.seed, folds=options.folds)
    meta = {"generated": generated.source, "real": real.source, "training": training.source,
            "checkpoint": str(checkpoint or ""), "synth": str(synth or "")}
    paths = write_outputs(result, out, meta, options.figures, training=training.images)
    return result, paths
