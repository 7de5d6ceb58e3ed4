"""Units and one-line descriptions of the catalogue columns galhpc writes (docs/schema.md).

Used for astropy tables (`Catalog.table`), FITS TUNIT/TCOMM cards and Parquet field
metadata.  A unit of "" is dimensionless; None means the unit is not known (e.g. it is
that of the input pixels, whatever the survey's were).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple

from galhpc.formats import catalog as C


class ColumnInfo(NamedTuple):
    """A catalogue column's unit (astropy string; "" dimensionless, None none) and description."""

    unit: str | None
    description: str


COLUMNS: dict[str, ColumnInfo] = {
    C.OBJECT_ID: ColumnInfo(None, "object id: the store's object_id (encode) or object index (generate)"),
    C.COMPONENT: ColumnInfo(None, "mixture component: sampled from (generate) or argmax gamma (encode); -1 none"),
    C.SEED: ColumnInfo(None, "seed of the torch.Generator of the sample call that made the object"),
    C.Z: ColumnInfo("", "latent vector the image was decoded from"),
    C.MU: ColumnInfo("", "posterior mean of the latent vector"),
    C.LOGVAR: ColumnInfo("", "posterior log variance of the latent vector"),
    C.GAMMA: ColumnInfo("", "responsibilities p(c | z = mu) of the mixture components"),
    C.RECON_MSE: ColumnInfo(None, "mean squared reconstruction error, in squared input pixel units"),
    "p_galaxy": ColumnInfo("", "probability that the object is a galaxy (double-peaked prior)"),
    "star_pixel_fraction": ColumnInfo("", "fraction of pixels segmented as star"),
    "galaxy_pixel_fraction": ColumnInfo("", "fraction of pixels segmented as galaxy"),
    "flux_norm": ColumnInfo(None, "flux coefficient drawn from the training store: "
                                  "survey pixels = image * flux_norm / flux_scale"),
    "flux": ColumnInfo(None, "total flux in the survey's units (/meta image_bunit) summed over pixels"),
    "mag_ab": ColumnInfo("mag", "AB magnitude: zero_point - 2.5 log10(flux); NaN without a zero point"),
    "ra": ColumnInfo("deg", "right ascension (ICRS) of the object, from the store"),
    "dec": ColumnInfo("deg", "declination (ICRS) of the object, from the store"),
    "separation": ColumnInfo("arcsec", "angular distance of the object from the queried sky position"),
    C.IMAGES: ColumnInfo(None, "image, in the model's output pixel units"),
    C.IMAGES_CLEAN: ColumnInfo(None, "image before PSF and noise, in the model's output pixel units"),
}


def column_info(name: str, meta: Mapping[str, Any] | None = None) -> ColumnInfo:
    """The unit and description of column `name`.

    Parameters
    ----------
    name : str
        A catalogue or table column.
    meta : mapping, optional
        A catalogue's /meta: a store label column it carries (its ``passthrough`` JSON
        list) is described as such, with the unit the store recorded (``column_units``).

    Returns
    -------
    ColumnInfo
        Unknown columns: no unit, the name as description.
    """
    if name in COLUMNS:
        return COLUMNS[name]
    carried = json.loads((meta or {}).get("passthrough", "[]"))
    if name in carried:
        units = json.loads((meta or {}).get("column_units", "{}"))
        return ColumnInfo(units.get(name), f"store label column {name}, passed through")
    return ColumnInfo(None, name)
