"""Build and install galhpc with its torch extension galhpc._ext (cpp_ext/).

The C++ (OpenMP) kernels are always built; CUDA kernels are added when torch has CUDA
and nvcc is found.  Install with `pip install --no-build-isolation -e .` so the
extension compiles against the torch already installed.
"""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def extension_modules():
    import torch
    from torch.utils import cpp_extension

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

setup(
    name="galhpc",
    version="0.1.0",
    description="HPC batch toolkit for unsupervised galaxy morphology and synthetic galaxy images",
    packages=find_packages(include=["galhpc", "galhpc.*"]),
    python_requires=">=3.10",
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    entry_points={
        "console_scripts": [
            "galhpc-prep=galhpc.cli.prep:main",
            "galhpc-train=galhpc.cli.train:main",
            "galhpc-encode=galhpc.cli.encode:main",
            "galhpc-generate=galhpc.cli.generate:main",
            "galhpc-report=galhpc.cli.report:main",
        ]
    },
)
