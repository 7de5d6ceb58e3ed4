"""Every pinned requirement is installed at its pin and imports: a missing required package is
a failure here, never a skip elsewhere (tests import required packages plainly; only the
packages outside requirements.txt, e.g. Horovod, may skip, and they say why)."""

import importlib
import importlib.metadata
import re
from pathlib import Path

import pytest

REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements.txt"
# distributions whose import name is not their name with '-' -> '_'
MODULES = {"scikit-learn": "sklearn", "scikit-image": "skimage", "pyyaml": "yaml", "faiss-cpu": "faiss",
           "pytest-timeout": "pytest_timeout"}


def pinned() -> list[tuple[str, str]]:
    pins = []
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
            assert match, f"requirements.txt: {line!r} is not pinned as name==version"
            pins.append((match[1], match[2]))
    return pins


def test_requirements_file_lists_the_core_packages():
    names = {name.lower() for name, _ in pinned()}
    assert {"numpy", "scipy", "h5py", "galsim", "scikit-learn", "astropy", "matplotlib"} <= names


@pytest.mark.parametrize("name, version", pinned())
def test_required_package_is_installed_at_its_pin_and_imports(name, version):
    try:
        installed = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"required package {name}=={version} (requirements.txt) is not installed")
    assert installed == version, f"{name} {installed} is installed; requirements.txt pins {version}"
    importlib.import_module(MODULES.get(name.lower(), name.lower().replace("-", "_")))
