"""Build galhpc's torch extension galhpc._ext (cpp_ext/); the metadata is in pyproject.toml.

The C++ (OpenMP) kernels are always built; CUDA kernels are added when torch has CUDA
and nvcc is found.  The extension must be compiled against the torch that will run it,
so install torch first and then galhpc without build isolation:

    pip install --no-build-isolation -e .
"""

from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent


def extension_modules():
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError as err:
        raise SystemExit(
            f"building galhpc needs torch installed first ({err}); install torch (https://pytorch.org), "
            "then `pip install --no-build-isolation -e .` so the extension is built against it"
        ) from err

    cpu_sources = sorted(str(p.relative_to(HERE)) for p in (HERE / "cpp_ext").glob("*.cpp"))
    if not cpu_sources:
        return [], {}
    cuda_sources = sorted(str(p.relative_to(HERE)) for p in (HERE / "cpp_ext").glob("*.cu"))
    with_cuda = bool(cuda_sources) and torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None
    extra = {"cxx": ["-O3", "-fopenmp"]}
    if with_cuda:
        extra["nvcc"] = ["-O3", "--use_fast_math"]
        ext = cpp_extension.CUDAExtension(
            "galhpc._ext",
            cpu_sources + cuda_sources,
            define_macros=[("GALHPC_WITH_CUDA", None)],
            extra_compile_args=extra,
            extra_link_args=["-fopenmp"],
        )
    else:
        ext = cpp_extension.CppExtension(
            "galhpc._ext", cpu_sources, extra_compile_args=extra, extra_link_args=["-fopenmp"]
        )
    return [ext], {"build_ext": cpp_extension.BuildExtension}


ext_modules, cmdclass = extension_modules()

setup(ext_modules=ext_modules, cmdclass=cmdclass)
