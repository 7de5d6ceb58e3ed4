"""The report's sample and figure sizes.

Apart from the sections, so that `galhpc-report --help` shows their defaults without
importing torch, matplotlib or scipy.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ReportOptions:
    """Sample sizes and figure sizes of a report (defaults suit a laptop in a few minutes)."""

    max_objects: int = 20000  # rows of clusters.h5 sampled for cluster and latent metrics
    seed: int = 0
    n_holdout: int = 500  # store images reconstructed (figures, best/worst, Regier's test)
    n_morph: int = 100  # images per set measured with statmorph
    n_condition_bins: int = 3  # quantile bins of a float condition (fewer when there are few stamps)
    match_noise: bool = True  # add noise to generated stamps up to the real stamps' sky σ
    n_tsne: int = 1000
    n_show: int = 8  # stamps per figure row
    search_ids: tuple[int, ...] = ()  # query objects of the search mosaic (default: one per component)
    n_search_queries: int = 8  # rows of the search mosaic when no ids are given
    search_k: int = 6  # nearest neighbours per query in the search mosaic
    n_traversal_dims: int = 12  # latents traversed, highest SNR first
    steps: int = 9
    batch_size: int = 256
