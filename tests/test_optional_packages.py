"""The core runs without the optional packages: a subprocess in which GalSim, fitsio,
faiss, statmorph, submitit, Horovod, numba, matplotlib, tqdm, scikit-learn and the
compiled extension cannot be imported trains, generates, encodes and runs the kernels,
and features that need a missing package fail with a line naming it."""

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
BLOCK = "galsim,fitsio,faiss,statmorph,submitit,horovod,numba,matplotlib,tqdm,sklearn,galhpc._ext"


def run_blocked(tmp_path):
    env = {**os.environ, "GALHPC_BLOCK": BLOCK, "GALHPC_PROGRESS": "0", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(HERE / "blocked_site"), str(HERE.parent), str(HERE)])}
    done = subprocess.run([sys.executable, str(HERE / "optional_worker.py"), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    line = next(out for out in done.stdout.splitlines() if out.startswith("REPORT "))
    return json.loads(line[len("REPORT "):])


def test_blocker_really_blocks(tmp_path):
    env = {**os.environ, "GALHPC_BLOCK": BLOCK, "PYTHONPATH": str(HERE / "blocked_site")}
    done = subprocess.run([sys.executable, "-c", "import galsim"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "blocked for this test" in done.stderr


def test_core_runs_without_optional_packages(tmp_path):
    report = run_blocked(tmp_path)
    assert report["train_steps"] > 0 and report["generated"] == 64 and report["encoded"] == 96
    assert report["nearest_code_ok"] and report["convolve_psf_shape"] == [2, 1, 16, 16]
    assert report["blocked_loaded"] == []
    errors = report["errors"]
    assert "backend 'numba' needs the numba package" in errors["numba"]
    assert "galhpc._ext are not available" in errors["cpp"]
    assert "MissingExtraError" in errors["galsim_psf"] and "pip install 'galhpc[sim]'" in errors["galsim_psf"]
    assert "horovod backend needs Horovod" in errors["horovod"]
