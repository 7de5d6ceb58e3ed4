"""galhpc.runtime.files: atomic writes, cleanup of dead writers' temporaries, lock-free reads."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from galhpc.formats.hdf5 import H5Output, open_h5_readonly
from galhpc.runtime.files import (
    atomic_open,
    atomic_path,
    remove_stale_temps,
    temp_path,
    write_text_atomic,
)

ROOT = Path(__file__).resolve().parents[1]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temp_name_encodes_host_and_pid(tmp_path):
    tmp = temp_path(tmp_path / "out.h5")
    assert tmp.parent == tmp_path
    assert tmp.name == f".out.h5.tmp.{socket.gethostname()}.{os.getpid()}"


def test_success_replaces_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    write_text_atomic(target, "one")
    assert target.read_text() == "one"
    with pytest.raises(RuntimeError), atomic_open(target, "w") as fh:
        fh.write("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "one" and sorted(p.name for p in target.parent.iterdir()) == ["a.txt"]
    with atomic_path(tmp_path / "b.h5") as tmp, h5py.File(tmp, "w") as f:
        f["x"] = np.arange(3)
        assert not (tmp_path / "b.h5").exists()  # invisible until complete
    with open_h5_readonly(tmp_path / "b.h5") as f:
        assert f["x"][()].tolist() == [0, 1, 2]


def test_cleanup_removes_only_temporaries_of_writers_that_are_gone(tmp_path):
    host = socket.gethostname()
    dead = tmp_path / f".a.h5.tmp.{host}.{dead_pid()}"
    mine = tmp_path / f".b.h5.tmp.{host}.{os.getpid()}"  # this (live) process writes it
    live_parent = tmp_path / f".c.h5.tmp.{host}.{os.getppid()}"
    other_fresh = tmp_path / ".d.h5.tmp.node-7.cluster.123"
    other_old = tmp_path / ".e.h5.tmp.node-7.cluster.456"
    unrelated = tmp_path / ".f.h5.tmp-host-1"
    for path in (dead, mine, live_parent, other_fresh, other_old, unrelated):
        path.write_bytes(b"partial")
    week_ago = time.time() - 7 * 86400
    os.utime(other_old, (week_ago, week_ago))
    removed = remove_stale_temps(tmp_path)
    assert sorted(removed) == sorted([dead, other_old])
    assert {p.name for p in tmp_path.iterdir()} == {mine.name, live_parent.name, other_fresh.name, unrelated.name}
    # by final name only
    dead2 = tmp_path / f".x.h5.tmp.{host}.{dead_pid()}"
    dead2.write_bytes(b"")
    assert remove_stale_temps(tmp_path, "y.h5") == [] and dead2.exists()
    assert remove_stale_temps(tmp_path, "x.h5") == [dead2]


def test_readers_open_without_file_locks(tmp_path):
    """A store held open for writing by another process (which holds HDF5's lock) is still readable."""
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((2, 4, 4), np.float32)
    holder = subprocess.Popen([sys.executable, "-c", "import h5py, sys, time; f = h5py.File(sys.argv[1], 'a'); "
                               "print('open', flush=True); time.sleep(60)", str(path)], stdout=subprocess.PIPE,
                              env={**os.environ, "HDF5_USE_FILE_LOCKING": "TRUE"})
    try:
        assert holder.stdout.readline().strip() == b"open"
        with open_h5_readonly(path) as f:
            assert f["images"].shape == (2, 4, 4)
    finally:
        holder.kill()
        holder.wait()


def _write_h5(tmp: Path) -> None:

    with H5Output(tmp) as f:
        f["x"] = np.arange(10.0)
        raise KeyboardInterrupt  # Ctrl-C in the middle of the write


def _write_text(tmp: Path) -> None:
    with open(tmp, "w") as fh:
        fh.write("half")
        raise KeyboardInterrupt


@pytest.mark.parametrize("writer", ["atomic_path+H5Output", "atomic_path", "atomic_open", "write_text_atomic"])
def test_an_interrupt_inside_an_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path, writer, monkeypatch):
    from galhpc.runtime import files

    final = tmp_path / "c.h5"
    final.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        if writer == "atomic_path+H5Output":
            with files.atomic_path(final) as tmp:
                _write_h5(tmp)
        elif writer == "atomic_path":
            with files.atomic_path(final) as tmp:
                _write_text(tmp)
        elif writer == "atomic_open":
            with files.atomic_open(final) as fh:
                fh.write("half")
                raise KeyboardInterrupt
        else:  # interrupted inside the flush to disk, the last step before the rename
            def interrupted(path):
                raise KeyboardInterrupt

            monkeypatch.setattr(files, "fsync_path", interrupted)
            files.write_text_atomic(final, "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5"] and final.read_text() == "old"


def test_an_interrupt_while_hdf5_creates_the_file_leaves_nothing(tmp_path, monkeypatch):
    """H5Output used without atomic_path (the store writer): the file it had just created goes."""

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(h5py, "File", interrupted)
    with pytest.raises(KeyboardInterrupt):
        H5Output(tmp_path / "s.h5")
    assert list(tmp_path.iterdir()) == []


_LONG_WRITE = """
import sys, numpy as np
from galhpc.formats.hdf5 import H5Output
from galhpc.runtime.files import atomic_open, atomic_path
final, kind = sys.argv[1], sys.argv[2]
if kind == "hdf5":
    with atomic_path(final) as tmp, H5Output(tmp) as f:
        d = f.create_dataset("images", shape=(0, 64), maxshape=(None, 64), dtype="f4", chunks=(256, 64))
        for i in range(10**9):
            d.resize(((i + 1) * 256, 64))
            d[i * 256:] = np.ones((256, 64), "f4")
            if i == 3:
                print("writing", flush=True)
else:
    with atomic_open(final, "w") as fh:
        for i in range(10**9):
            fh.write("x" * 4096)
            if i == 3:
                fh.flush()
                print("writing", flush=True)
"""


@pytest.mark.parametrize("kind", ["hdf5", "text"])
def test_sigint_to_a_writing_process_leaves_no_temporary(tmp_path, kind):
    import signal

    final = tmp_path / "out.h5"
    proc = subprocess.Popen([sys.executable, "-c", _LONG_WRITE, str(final), kind], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout.readline().strip() == "writing", proc.stderr.read()
        assert [p.name for p in tmp_path.iterdir()] == [temp_path(final).name.replace(str(os.getpid()),
                                                                                         str(proc.pid))]
        err = "still running after 240 interrupts"
        # An interrupt that lands inside HDF5's write callback (h5py's file-object driver) is
        # swallowed there, so press Ctrl-C again until the process stops, as a user would.
        for _ in range(240):
            proc.send_signal(signal.SIGINT)
            try:
                _, err = proc.communicate(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                continue
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0 and "KeyboardInterrupt" in err, err
    assert list(tmp_path.iterdir()) == []
