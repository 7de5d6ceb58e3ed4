"""Imports only go down the floors of galhpc/layers.py (parsed with ast, no import executed)."""

from __future__ import annotations

import ast
from pathlib import Path

from galhpc.layers import FLOORS, floor_of

PACKAGE = Path(__file__).resolve().parents[1] / "galhpc"


def top_level(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "galhpc"


def galhpc_imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported galhpc module) of every import in a file, lazy ones inside functions included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                and node.module.split(".")[0] == "galhpc"):
            if node.module == "galhpc":  # `from galhpc import x`: x may be a package
                found += [(node.lineno, f"galhpc.{alias.name}") for alias in node.names if alias.name != "__version__"]
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "galhpc"]
    return found


def violations(root: Path = PACKAGE) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        module = ".".join(path.relative_to(root.parent).with_suffix("").parts)
        if module.endswith(".__init__"):
            module = module[: -len(".__init__")]
        own = top_level(module)
        for line, imported in galhpc_imports(path):
            target = top_level(imported)
            if target == own or target == "galhpc":
                continue
            if floor_of(target) >= floor_of(own):
                bad.append(f"{path.relative_to(root.parent)}:{line}: {module} (floor {floor_of(own)}) imports "
                           f"{imported} (floor {floor_of(target)})")
    return bad


def test_every_module_is_on_a_floor():
    names = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists())) and p.name != "__init__.py"}
    for name in names | {"_ext"}:  # the compiled extension may not be built here
        floor_of(name)
    assert len({n for floor in FLOORS for n in floor}) == sum(len(f) for f in FLOORS)  # each name once


def test_imports_only_go_down_the_floors():
    assert violations() == []


def test_the_check_catches_an_import_up_the_floors(tmp_path):
    """Two imports that run back up: models -> inference (the catalogue jobs), models -> checkpoint."""
    models = tmp_path / "galhpc" / "models"
    models.mkdir(parents=True)
    (models / "vade.py").write_text("from galhpc.inference.starsep import evaluate\n")
    (models / "pixelcnn.py").write_text("def f():\n    from galhpc.checkpoint import load_model\n")
    (models / "ok.py").write_text("from galhpc.runtime.world import LOCAL\n"
                                  "from galhpc.models.base import GalaxyModel\n")
    found = violations(tmp_path / "galhpc")
    assert len(found) == 2 and "imports galhpc.inference.starsep" in found[1] and "galhpc.checkpoint" in found[0]


# Above the format modules only the io layer touches HDF5: `galhpc/formats/` (names, the
# read-only open, H5Output), `galhpc/io/` (catalogue, store and table readers and writers)
# and the training store's own writer and batch loader in `galhpc/data/`.
H5PY_HOMES = ("formats/", "io/", "data/store.py", "data/loader.py", "data/prep.py")


def h5py_importers(root: Path = PACKAGE) -> list[str]:
    """Modules (paths relative to `root`) that import h5py, lazily inside functions included."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            if any(name.split(".")[0] == "h5py" for name in names):
                found.append(path.relative_to(root).as_posix())
                break
    return found


def h5py_outside_io(root: Path = PACKAGE) -> list[str]:
    return [p for p in h5py_importers(root) if not p.startswith(H5PY_HOMES)]


def test_only_the_io_layer_imports_h5py():
    assert h5py_outside_io() == []


def test_the_h5py_check_catches_a_module_above_io(tmp_path):
    """A report module opening HDF5 itself, lazily or not, is caught; formats/, io/ and the store are not."""
    root = tmp_path / "galhpc"
    for name, text in {"report/sampling.py": "import h5py\n",
                       "search/source.py": "def f():\n    from h5py import File\n",
                       "io/store.py": "import h5py\n", "formats/hdf5.py": "import h5py.h5f\n",
                       "data/store.py": "import h5py\n", "data/fits.py": "import numpy\n"}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    assert h5py_outside_io(root) == ["report/sampling.py", "search/source.py"]
