"""The compiled extension: what it was built with, and that the CUDA sources compile with nvcc."""

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from galhpc.kernels import backend

CPP_EXT = Path(__file__).resolve().parents[1] / "cpp_ext"


@pytest.mark.skipif(not backend.extension_available(), reason="galhpc._ext not built")
def test_extension_has_cuda_exactly_when_torch_and_the_toolkit_do():
    from torch.utils import cpp_extension

    assert backend.extension_has_cuda() == (torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
@pytest.mark.parametrize("source", sorted(p.name for p in CPP_EXT.glob("*.cu")))
def test_cuda_sources_compile_with_nvcc(source, tmp_path):
    """Compile check only: running the kernels needs a GPU (untested on hardware here)."""
    done = subprocess.run(
        ["nvcc", "-O3", "-std=c++17", "-arch=sm_80", "-c", str(CPP_EXT / source), "-o", str(tmp_path / "k.o")],
        capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "k.o").stat().st_size > 0
