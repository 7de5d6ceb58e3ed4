"""The emulated cluster (tests/multinode_cluster.py) works from a checkout under /tmp.

Each emulated node has a private /tmp; a checkout that lies under /tmp (a common place
for one, and `$TMPDIR` on clusters) must still be seen by every node at its own path, or
every job fails at "Unable to return to working directory".
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from multinode_cluster import namespaces_missing  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# Run with the copied checkout's tests/ as working directory: its own cluster helper.
_DRIVER = r"""
import sys
from pathlib import Path
from multinode_cluster import MultiNodeSlurm

work, CHECKOUT = Path(sys.argv[1]), Path.cwd().parent
cluster = MultiNodeSlurm(work / "cluster", nodes=2, cpus=1).start()
try:
    out = cluster.root / "job.out"  # the cluster's root is shared by every node
    job = cluster.run(["sbatch", "--parsable", f"--chdir={CHECKOUT}", f"--output={out}", "--nodes=2",
                       "--ntasks-per-node=1", "--wrap",
                       f"srun sh -c '{sys.executable} tests/multinode_cluster.py && echo ran on $(hostname) in $(pwd)'"]
                      ).stdout.strip().split(";")[0]
    state = cluster.wait_job(job, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"), timeout=180)
    print("state", state)
    print(out.read_text() if out.exists() else "(no job output)")
finally:
    cluster.stop()
"""


@pytest.mark.slow  # starts a 2-node cluster (about half a minute)
def test_the_cluster_runs_jobs_from_a_checkout_under_tmp(tmp_path):
    reason = namespaces_missing()
    if reason is not None:
        pytest.skip(f"no emulated multi-node cluster: {reason}")
    checkout = Path(tempfile.mkdtemp(prefix="galhpc checkout ", dir="/tmp"))  # a space, too
    try:
        shutil.copytree(REPO / "tests", checkout / "tests", ignore=shutil.ignore_patterns("__pycache__"))
        done = subprocess.run([sys.executable, "-c", _DRIVER, str(tmp_path)], cwd=checkout / "tests",
                              capture_output=True, text=True, timeout=600)
    finally:
        shutil.rmtree(checkout, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "state COMPLETED" in done.stdout, done.stdout[-4000:]
    ran = sorted(line for line in done.stdout.splitlines() if line.startswith("ran on "))
    assert ran == [f"ran on node{i} in {checkout}" for i in range(2)], done.stdout[-4000:]
