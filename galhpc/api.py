"""The small public API of galhpc, re-exported lazily by `galhpc/__init__.py`.

`load_model` (defined in `galhpc.checkpoint`), `open_catalog`, `open_store` (galhpc.io) and
the two kernels (galhpc.kernels) are documented where they are defined.
"""

from __future__ import annotations

from galhpc.checkpoint import load_model

__all__ = ["load_model"]
