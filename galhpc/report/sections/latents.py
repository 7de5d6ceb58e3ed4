"""Section 4, latent diagnostics: per-latent SNR and a t-SNE of μ."""

from __future__ import annotations

from typing import Any

import numpy as np

from galhpc.report import figures, metrics
from galhpc.report.inputs import ReportInputs
from galhpc.report.options import ReportOptions
from galhpc.report.sections.base import Figures, Section, pick, register


def run(inputs: ReportInputs, opt: ReportOptions, figs: Figures, rng: np.random.Generator) -> dict[str, Any]:
    """Per-latent SNR and a t-SNE of μ coloured by component and every store label.

    Parameters
    ----------
    inputs : ReportInputs
        The catalogue sample's μ and log σ², the store's labels when given.
    opt : ReportOptions
        ``n_tsne`` points; ``seed`` of the t-SNE.
    figs : Figures
        Receives latent_snr.png and tsne.png.
    rng : numpy.random.Generator
        Picks the t-SNE points.

    Returns
    -------
    dict
        ``snr`` (L,), ``n_latents_snr_above_1``, ``tsne_points`` (or ``tsne_skipped``).
    """
    from sklearn.manifold import TSNE

    cs = inputs.clusters
    snr = metrics.latent_snr(cs.mu, cs.logvar)
    order = np.argsort(-snr)
    figures.bar(snr[order], [str(d) for d in order], figs.path("latents", "latent_snr.png",
                                                               "Per-latent SNR = std(μ)/mean(σ), sorted"),
                ylabel="SNR", title="Latent signal-to-noise", xlabel="latent (sorted by SNR)")
    out: dict[str, Any] = {"snr": snr.tolist(), "n_latents_snr_above_1": int((snr > 1).sum())}
    chosen = pick(len(cs.mu), opt.n_tsne, rng)
    if len(chosen) < 10:
        out["tsne_skipped"] = "fewer than 10 sampled objects"
        return out
    xy = TSNE(n_components=2, perplexity=min(30.0, (len(chosen) - 1) / 3), init="pca",
              random_state=opt.seed).fit_transform(cs.mu[chosen].astype(np.float64))
    colourings = {"component": cs.component[chosen]}
    for name, values in inputs.labels.items():
        classes = metrics.discretise_label(values[chosen])
        colourings[name] = values[chosen] if values.dtype.kind == "f" or classes is None else classes
    figures.scatter_2d(xy, colourings, figs.path("latents", "tsne.png", "t-SNE of μ coloured by component and labels"),
                       title=f"t-SNE of μ ({len(chosen)} objects)")
    out["tsne_points"] = len(chosen)
    return out


SECTION = register(Section(name="latents", title="4. Latent diagnostics", requires=(), run=run))
