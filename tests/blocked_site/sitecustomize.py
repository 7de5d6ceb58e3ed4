"""Put on PYTHONPATH by tests/test_optional_packages.py: makes the optional packages of
galhpc unimportable, as on a bare GPU machine (GALHPC_BLOCK: comma-separated module names)."""

import importlib.abc
import importlib.machinery
import os
import sys

BLOCKED = {name for name in os.environ.get("GALHPC_BLOCK", "").split(",") if name}


class _Blocker(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds blocked modules first and fails to load them, as an absent package fails."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in BLOCKED or fullname.split(".")[0] in BLOCKED:
            return importlib.machinery.ModuleSpec(fullname, self)
        return None

    def create_module(self, spec):
        raise ModuleNotFoundError(f"No module named {spec.name!r} (blocked for this test)", name=spec.name)

    def exec_module(self, module):
        raise ModuleNotFoundError(f"No module named {module.__name__!r} (blocked for this test)")


sys.meta_path.insert(0, _Blocker())
