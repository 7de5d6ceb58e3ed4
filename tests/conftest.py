"""Shared test settings: no progress bars, deterministic small thread pools."""

import os

os.environ.setdefault("GALHPC_PROGRESS", "0")
os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
