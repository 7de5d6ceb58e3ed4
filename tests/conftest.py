"""Shared test settings: no progress bars, deterministic small thread pools."""

import logging
import os

import pytest

os.environ.setdefault("GALHPC_PROGRESS", "0")
os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")


@pytest.fixture(autouse=True)
def _galhpc_records_reach_caplog(monkeypatch):
    """`setup_logging` (run by every CLI `main`, which many tests call in-process) stops
    propagation at the "galhpc" logger so a rank's lines are written once; caplog listens
    at the root, so every later test in the process would see no galhpc records."""
    monkeypatch.setattr(logging.getLogger("galhpc"), "propagate", True)
