"""Logs a person can read: progress as whole log lines away from a terminal, a bar on one;
the threads line names where the number came from."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from galhpc.runtime import process

ROOT = Path(__file__).resolve().parents[1]

_LOOP = """
import sys, time
from galhpc.runtime import process
process.LOG_MIN_INTERVAL_S = 0.0
process.setup_logging(0)
import logging
log = logging.getLogger("galhpc.test")
for epoch in range(2):
    for _ in process.progress(range(50), 0, total=50, desc=f"epoch {epoch + 1}/2", leave=False):
        time.sleep(0.001)
    log.info("epoch %d done", epoch + 1)
"""


def _run_loop(stderr, mode: str | None) -> None:
    env = {k: v for k, v in os.environ.items() if k != "GALHPC_PROGRESS"}
    if mode is not None:
        env["GALHPC_PROGRESS"] = mode
    env["PYTHONPATH"] = str(ROOT)
    subprocess.run([sys.executable, "-c", _LOOP], stderr=stderr, env=env, check=True, timeout=120)


def test_a_log_file_gets_whole_progress_lines_not_bar_fragments(tmp_path):
    log_path = tmp_path / "job.out"
    with open(log_path, "w") as log_file:  # a batch job's output: not a terminal
        _run_loop(log_file, None)
    text = log_path.read_text()
    assert "\r" not in text and "\x1b" not in text, text  # no bar redrawn in place
    lines = text.splitlines()
    assert all(" [rank 0] INFO " in line for line in lines), lines  # every line a whole log line
    progress = [line for line in lines if "galhpc.progress" in line]
    assert len(progress) == 20, lines  # one per 10 % of each epoch
    assert progress[0].endswith("s left") and "epoch 1/2: 5/50 it (10 %)" in progress[0], progress
    assert "epoch 2/2: 50/50 it (100 %)" in progress[-1]
    assert sum("epoch 1 done" in line for line in lines) == 1


def test_a_terminal_gets_the_bar(tmp_path):
    import fcntl
    import pty
    import struct
    import termios

    parent, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal 100 columns wide
    try:
        _run_loop(child, None)
        os.close(child)
        child = -1
        out = b""
        while True:
            try:
                chunk = os.read(parent, 65536)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            out += chunk
    finally:
        if child != -1:
            os.close(child)
        os.close(parent)
    text = out.decode(errors="replace")
    assert "\repoch 1/2:   0%|" in text and "| 0/50 [" in text, text  # tqdm's bar, redrawn in place
    assert "galhpc.progress" not in text, text  # and no progress log lines


def test_hidden_on_other_ranks_and_by_galhpc_progress_0(monkeypatch):
    monkeypatch.delenv("GALHPC_PROGRESS", raising=False)
    assert isinstance(process.progress(range(3), rank=1), process._NoBar)
    monkeypatch.setenv("GALHPC_PROGRESS", "0")
    assert isinstance(process.progress(range(3), rank=0), process._NoBar)


@contextlib.contextmanager
def progress_records() -> Iterator[list[logging.LogRecord]]:
    """The records of the "galhpc.progress" logger at INFO while the block runs."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("galhpc.progress")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def test_without_a_total_a_line_per_interval(monkeypatch):
    monkeypatch.setenv("GALHPC_PROGRESS", "log")
    monkeypatch.setattr(process, "LOG_EVERY_S", 0.0)
    with progress_records() as records, process.progress(None, 0, unit="obj", desc="out.h5") as bar:
        bar.update(64)
        bar.set_postfix(shards=2)
        bar.update(64)
    messages = [r.getMessage() for r in records]
    assert messages[0].startswith("out.h5: 64 obj, ") and messages[1].endswith("[shards=2]"), messages


def test_training_threads_from_the_config_are_logged_as_such(monkeypatch, caplog):
    """galhpc-train has no --threads: the number comes from train.threads, and the log says so."""
    from galhpc.config import RunConfig, TrainConfig
    from galhpc.train import trainer

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(trainer, "make_backend", stop)
    torch_threads = __import__("torch").get_num_threads()
    with caplog.at_level(logging.INFO, logger="galhpc.runtime.world"), pytest.raises(Stop):
        trainer.train(RunConfig(train=TrainConfig(threads=1)))
    __import__("torch").set_num_threads(torch_threads)
    lines = [r.getMessage() for r in caplog.records if "torch CPU threads" in r.getMessage()]
    assert lines == ["torch CPU threads per rank: 1 (as asked (train.threads))"], lines


def test_the_reports_statmorph_step_shows_its_progress(monkeypatch):
    """statmorph takes about a second a stamp: the report's longest silent step logs progress."""
    import numpy as np

    from galhpc.fidelity import morphology

    monkeypatch.setenv("GALHPC_PROGRESS", "log")
    monkeypatch.setattr(process, "LOG_MIN_INTERVAL_S", 0.0)
    monkeypatch.setattr(morphology, "measure", lambda image: {name: 0.0 for name in morphology.STATISTICS})
    with progress_records() as records:
        table = morphology.morphology_table(np.zeros((20, 8, 8)), "statmorph, real stamps")
    assert len(next(iter(table.values()))) == 20
    messages = [r.getMessage() for r in records]
    assert len(messages) == 10 and messages[-1].startswith("statmorph, real stamps: 20/20 stamp (100 %)"), messages
