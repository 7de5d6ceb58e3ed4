"""The whole `galhpc-fidelity` job: read the three sets, score, write the table and figures."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from galhpc.fidelity import sources
from galhpc.fidelity.sampling import MODES, ExPostSampler, SamplingOptions, apply_temperature
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
    sampling: SamplingOptions = SamplingOptions()  # prior (model.sample) or ex post; temperature


def run_fidelity(out: str | Path, options: FidelityOptions, *, checkpoint: str | Path | None = None,
                 synth: str | Path | None = None, store: str | Path | None = None,
                 real_store: str | Path | None = None) -> tuple[FidelityResult, dict[str, Path]]:
    """Score a generator's stamps against held-out real ones and write `out/`.

    A conditioned model (a class- or float-conditioned PixelCNN prior) is sampled at the
    real stamps' own condition values (drawn from the real set's label column), so the
    generated set has the real set's mix; a class-conditioned one without that column
    gets its classes in equal shares.

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
    result : FidelityResult
        The scored test.
    paths : dict of str to pathlib.Path
        Name -> path of each file written (`score.write_outputs`).

    Raises
    ------
    DataError
        When neither or both of `checkpoint` and `synth`, no store is known, the sets differ
        in stamp size, a float-conditioned model's label column is missing, or the sampling
        options do not fit the model (`galhpc.fidelity.sampling`).
    """
    from galhpc.checkpoint import checkpoint_config, load_model, read_checkpoint

    if (checkpoint is None) == (synth is None):
        raise DataError("give exactly one of a checkpoint (to sample) or a synth.h5 catalogue")
    rng = np.random.default_rng(options.seed)
    holdout_fraction, split_seed, model = 0.1, 0, None
    if checkpoint is not None:
        payload = read_checkpoint(checkpoint)
        cfg = checkpoint_config(payload, checkpoint)
        model = load_model(checkpoint, payload=payload)
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
        generated = sample_generated(model, options, real, real_store or store, training, rng)
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


def sample_generated(model, options: FidelityOptions, real: sources.StampSet, real_store: str | Path,
                     training: sources.StampSet, rng: np.random.Generator) -> sources.StampSet:
    """The generated set of a checkpoint, as `run_fidelity` draws it.

    Parameters
    ----------
    model : GalaxyModel
        A generative model (eval mode).
    options : FidelityOptions
        `n_generated`, `seed`, `batch_size`, `component` and `sampling` (prior or ex post, τ).
    real : StampSet
        The real set, read from `real_store` rows: a conditioned model is drawn at its
        stamps' condition values (with replacement when `n_generated` exceeds them).
    real_store : str or Path
        The store the real rows are from.
    training : StampSet
        Training stamps (the ex-post mixture is fitted to their latent means).
    rng : numpy.random.Generator
        Draws the condition values.

    Returns
    -------
    StampSet
        (n_generated, C, H, W) float32 stamps.

    Raises
    ------
    DataError
        For an unknown mode, τ <= 0, a float-conditioned model without its label column,
        or sampling options the model does not take.
    """
    sampling = options.sampling
    if sampling.mode not in MODES:
        raise DataError(f"sampling mode {sampling.mode!r} is not one of {MODES}")
    if sampling.temperature <= 0:
        raise DataError(f"sampling temperature must be > 0, got {sampling.temperature}")
    if sampling.mode == "expost":
        sampler = ExPostSampler(model, training.images, sampling, options.seed)
        return sources.sample_model(model, options.n_generated, options.seed, options.batch_size, options.component,
                                    sampler=sampler)
    apply_temperature(model, sampling)
    cond, values = model.sample_condition, None
    if cond is not None and options.component is None:
        try:
            real_values = sources.read_store_labels(real_store, real.rows, cond.column)
        except DataError:
            if cond.kind == "float":
                raise
            log.warning("%s: no %r labels: the classes are drawn in equal shares", real_store, cond.column)
        else:
            real_values = real_values[np.isfinite(real_values)]
            if len(real_values) == 0:
                raise DataError(f"{real_store}: the real stamps have no finite {cond.column!r} to sample at")
            values = rng.choice(real_values, options.n_generated, replace=len(real_values) < options.n_generated)
            log.info("sampling at the real stamps' %s (%s)", cond.column, cond.kind)
    return sources.sample_model(model, options.n_generated, options.seed, options.batch_size, options.component,
                                condition_values=values)
