"""Section 9, similarity search: query objects and their nearest catalogue objects by μ."""

from __future__ import annotations

from typing import Any

import numpy as np

from galhpc.report.inputs import ReportInputs
from galhpc.report.options import ReportOptions
from galhpc.report.sections.base import STORE, Figures, Requirement, Section, register
from galhpc.runtime.errors import DataError

TWO_IN_STORE = Requirement("two sampled objects in the store", lambda inp, opt: inp.store.present.sum() >= 2,
                           "fewer than two sampled catalogue objects are in the store")


def run(inputs: ReportInputs, opt: ReportOptions, figs: Figures, rng: np.random.Generator) -> dict[str, Any]:
    """The search mosaic: a few query objects and their k nearest catalogue objects by μ.

    Queries are `opt.search_ids` when given, else one per component: the member nearest to
    the component's mean μ (its most typical object).  Neighbours are searched exactly
    (`galhpc.search.topk.search_blocks`, as galhpc-search does) among the sampled catalogue
    objects found in the store, the query itself excluded; the figure is galhpc-search's
    mosaic (`galhpc.search.output.write_mosaic`: every panel titled with its object id,
    arcsinh stretch).

    Parameters
    ----------
    inputs : ReportInputs
        The catalogue sample's μ and a store holding at least two of its objects.
    opt : ReportOptions
        ``search_ids``, ``n_search_queries``, ``search_k``.
    figs : Figures
        Receives search_mosaic.png.
    rng : numpy.random.Generator
        Not drawn from: the search is exact.

    Returns
    -------
    dict
        ``queries`` (how chosen), ``k``, ``n_searched``, ``query_object_ids`` and
        ``neighbour_object_ids`` (queries × k, -1 where fewer were found).

    Raises
    ------
    DataError
        A requested id that is not among the sampled catalogue objects in the store.
    """
    from galhpc.search.output import write_mosaic
    from galhpc.search.topk import NO_ROW, search_blocks

    cs, store = inputs.clusters, inputs.store
    usable = np.flatnonzero(store.present)
    mu, object_id = cs.mu[usable], cs.object_id[usable]
    if opt.search_ids:
        where = {int(oid): i for i, oid in enumerate(object_id)}
        missing = [oid for oid in opt.search_ids if oid not in where]
        if missing:
            raise DataError(f"search ids {missing} are not among the {len(usable)} sampled catalogue objects in "
                            f"the store {store.path} (raise --max-objects, or give ids of the store)")
        queries = np.array([where[oid] for oid in opt.search_ids], np.int64)
        chosen = "ids given"
    else:
        component = cs.component[usable]
        picks = []
        for c in np.unique(component[component >= 0]):
            members = np.flatnonzero(component == c)
            centre = mu[members].mean(axis=0)
            picks.append(members[np.argmin(((mu[members] - centre) ** 2).sum(axis=1))])
        queries = np.array(picks[: opt.n_search_queries], np.int64)
        chosen = "per component, the member nearest to its mean μ"
    k = min(opt.search_k, len(usable) - 1)
    top = search_blocks(mu[queries], [(0, mu)], k, exclude=queries)
    found = top.rows != NO_ROW
    safe = np.where(found, top.rows, 0)
    unique, inverse = np.unique(store.member_rows[usable[np.concatenate([queries, safe.ravel()])]],
                                return_inverse=True)
    stamps = store.images(unique)[inverse]  # a neighbour of several queries is read once
    neighbours = stamps[len(queries):].reshape(*safe.shape, *stamps.shape[1:])
    neighbours = np.where(found.reshape(*found.shape, *[1] * (neighbours.ndim - 2)), neighbours, np.nan)
    captions = np.array([[f"{object_id[r]} d={d:.3g}" if ok else "" for r, d, ok in zip(rows, dist, oks, strict=False)]
                         for rows, dist, oks in zip(safe, top.distance, found, strict=False)], dtype=object)
    write_mosaic(figs.path("search", "search_mosaic.png",
                           f"Similarity search by μ: each query (red) and its {k} nearest catalogue objects "
                           "(object id, distance in μ)"),
                 stamps[: len(queries)], neighbours, [f"query {oid}" for oid in object_id[queries]], captions)
    return {"queries": chosen, "k": int(k), "n_searched": len(usable),
            "query_object_ids": object_id[queries].tolist(),
            "neighbour_object_ids": np.where(found, object_id[safe], -1).tolist()}


SECTION = register(Section(
    name="search", title="9. Similarity search by μ",
    requires=(STORE.because("no --store: no stamps to show the search results with"), TWO_IN_STORE), run=run))
