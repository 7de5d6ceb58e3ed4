"""Shard planning, rank assignment, seeds and the atomic shard/manifest protocol."""

import errno
import json
import os
import socket
import subprocess
import sys

import h5py
import numpy as np
import pytest

from galhpc.formats.catalog import Shard, shard_dir_for
from galhpc.inference.driver import auto_shard_size, count_auto_shard_size, effective_shard_size
from galhpc.inference.generate import component_segments, sample_blocks
from galhpc.inference.options import GenerateOptions
from galhpc.inference.seeds import NOISE_STREAM, derived_seed
from galhpc.io.catalog_writer import ShardWriter, WriteBehind, parse_compression, write_master
from galhpc.io.shards import assign_shards, complete_shards, plan_shards, prepare_output, shard_in_flight
from galhpc.runtime.errors import CatalogError, ConfigError
from galhpc.runtime.world import threads_per_rank


def test_plan_covers_every_object_once_in_order():
    shards = plan_shards(1003, 100)
    assert [s.index for s in shards] == list(range(11))
    assert shards[0].start == 0 and shards[-1].stop == 1003 and shards[-1].size == 3
    assert all(a.stop == b.start for a, b in zip(shards, shards[1:], strict=False))
    with pytest.raises(CatalogError, match="at least one object"):
        plan_shards(0, 10)


@pytest.mark.parametrize("ranks", [1, 2, 3, 7, 20])
def test_assignment_partitions_pending_shards(ranks):
    pending = [s for s in plan_shards(1000, 64) if s.index % 3]  # some already complete
    shares = [assign_shards(pending, r, ranks) for r in range(ranks)]
    flat = sorted((s for share in shares for s in share), key=lambda s: s.index)
    assert flat == pending


def test_shard_size_is_rounded_up_to_whole_batches():
    assert effective_shard_size(300, 64) == 320
    assert effective_shard_size(10, 64) == 64
    assert effective_shard_size(128, 64) == 128
    # auto: about 256 shards, whole batches, at most 65536 objects; never the rank count


def test_derived_seeds_are_stable_distinct_and_stream_separated():
    seeds = [derived_seed(7, i) for i in range(1000)]
    assert len(set(seeds)) == 1000 and all(0 <= s < 2**63 for s in seeds)
    assert derived_seed(7, 5) == derived_seed(7, 5)
    assert derived_seed(7, 5) != derived_seed(8, 5) != derived_seed(7, 5, NOISE_STREAM)
    with pytest.raises(ValueError):
        derived_seed(-1, 0)


def test_sample_blocks_follow_the_global_grid_and_component_cuts():
    opts = GenerateOptions(n=300, counts=(100, 0, 200))
    segments = component_segments(opts)
    assert segments == [(0, 100, 0), (100, 300, 2)]
    whole = sample_blocks(0, 300, 64, segments)
    assert whole == [(0, 64, 0), (64, 100, 0), (100, 128, 2), (128, 192, 2), (192, 256, 2), (256, 300, 2)]
    # any cut of the object range into pieces along the grid yields the same blocks
    parts = sample_blocks(0, 128, 64, segments) + sample_blocks(128, 300, 64, segments)
    assert parts == whole
    with pytest.raises(CatalogError, match="sum to n"):
        component_segments(GenerateOptions(n=10, counts=(3, 3)))


def test_shard_in_flight_renames_only_on_success(tmp_path):
    shard = Shard(4, 0, 10)
    with shard_in_flight(tmp_path, shard) as tmp:
        tmp.write_bytes(b"x")
        assert not (tmp_path / "000004.h5").exists()
    assert (tmp_path / "000004.h5").read_bytes() == b"x"
    with pytest.raises(RuntimeError), shard_in_flight(tmp_path, Shard(5, 10, 20)) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000004.h5"]
    assert complete_shards(tmp_path, plan_shards(30, 10)) == set()  # 000004 is not one of 0..2
    assert complete_shards(tmp_path, plan_shards(50, 10)) == {4}


def dead_pid() -> int:
    """The pid of a process that has exited (a killed writer)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_prepare_output_resumes_refuses_and_overwrites(tmp_path):
    out = tmp_path / "cat.h5"
    fp = {"kind": "generate", "n": 10}
    shard_dir = prepare_output(out, fp, False, None)
    assert shard_dir == shard_dir_for(out) and json.loads((shard_dir / "manifest.json").read_text()) == fp
    (shard_dir / "000000.h5").write_bytes(b"done")
    (shard_dir / f".000001.h5.tmp.{socket.gethostname()}.{dead_pid()}").write_bytes(b"partial")
    (tmp_path / f".cat.h5.tmp.{socket.gethostname()}.{dead_pid()}").write_bytes(b"half a master")
    prepare_output(out, fp, False, None)  # same run: resume, stale temporaries gone
    assert sorted(p.name for p in shard_dir.iterdir()) == ["000000.h5", "manifest.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.h5.shards"]
    with pytest.raises(CatalogError, match=r"(?s)n: 10 -> 11.*--overwrite"):
        prepare_output(out, {"kind": "generate", "n": 11}, False, None)
    prepare_output(out, {"kind": "generate", "n": 11}, True, None)
    assert sorted(p.name for p in shard_dir.iterdir()) == ["manifest.json"]


def test_prepare_output_refuses_a_foreign_file(tmp_path):
    out = tmp_path / "precious.h5"
    out.write_bytes(b"not ours")
    with pytest.raises(CatalogError, match="not a galhpc catalogue"):
        prepare_output(out, {"n": 1}, False, None)
    assert out.read_bytes() == b"not ours"


def test_writer_and_master_round_trip_with_compression(tmp_path):
    shard_dir = tmp_path / "m.h5.shards"
    shard_dir.mkdir()
    shards = plan_shards(10, 4)
    rng = np.random.default_rng(0)
    truth = {"images": rng.random((10, 3, 3), dtype=np.float32), "mu": rng.random((10, 2), dtype=np.float32),
             "object_id": np.arange(10, dtype=np.int64) * 3}
    for shard in shards:
        with shard_in_flight(shard_dir, shard) as tmp:
            writer = ShardWriter(tmp, shard, "gzip:1")
            for lo in range(shard.start, shard.stop, 3):
                hi = min(lo + 3, shard.stop)
                writer.write(lo - shard.start, {k: v[lo:hi] for k, v in truth.items()})
            writer.close()
    write_master(tmp_path / "m.h5", shard_dir, shards, {"kind": "test"}, {"gmm": {"w": np.ones(2)}})
    with h5py.File(tmp_path / "m.h5") as f:
        for name, values in truth.items():
            assert f[name].is_virtual and np.array_equal(f[name][()], values)
        assert np.array_equal(f["catalog"]["mu"], truth["mu"])
        assert f["catalog"].dtype.names == ("mu", "object_id")
        assert f["meta"].attrs["kind"] == "test" and np.array_equal(f["gmm/w"][()], np.ones(2))
    with h5py.File(shard_dir / "000000.h5") as f:
        assert f["images"].compression == "gzip" and f.attrs["stop"] == 4


def test_writer_refuses_an_incomplete_shard(tmp_path):
    writer = ShardWriter(tmp_path / "s.h5", Shard(0, 0, 5))
    writer.write(0, {"x": np.zeros(3)})
    with pytest.raises(RuntimeError, match="3 of 5 rows"):
        writer.close()


def test_parse_compression():
    assert parse_compression("none") == {}
    assert parse_compression("gzip")["compression_opts"] == 4
    with pytest.raises(ValueError, match="unknown compression"):
        parse_compression("zstd")


def test_lzf_catalogues_are_refused():
    """h5py's lzf filter makes a catalogue unreadable by h5dump and every non-h5py reader."""
    with pytest.raises(ConfigError, match="lzf.*h5dump"):
        parse_compression("lzf")
    with pytest.raises(ConfigError, match="gzip level"):
        parse_compression("gzip:x")


def test_write_behind_reports_the_writer_error():
    seen = []

    def write(x):
        if x == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        seen.append(x)

    behind = WriteBehind(write)
    behind.submit(1)
    behind.submit(2)
    with pytest.raises(OSError, match="No space"):
        for x in range(3, 10):
            behind.submit(x)
        behind.finish()
    assert seen == [1]


def test_threads_per_rank_share_the_node(tmp_path):
    none = tmp_path / "no-cgroup"
    assert threads_per_rank({}, affinity=16, cgroup_root=none)[0] == 16
    assert threads_per_rank({"OMPI_COMM_WORLD_LOCAL_SIZE": "4"}, affinity=16, cgroup_root=none)[0] == 4
    assert threads_per_rank({"OMPI_COMM_WORLD_LOCAL_SIZE": "64"}, affinity=16, cgroup_root=none)[0] == 1
    assert threads_per_rank({}, cgroup_root=none)[0] == len(os.sched_getaffinity(0))  # the real mask


def test_threads_per_rank_respects_slurm_and_the_cgroup_quota(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("300000 100000\n")  # 3 CPUs of a 64-core node
    threads, why = threads_per_rank({}, affinity=64, cgroup_root=v2)
    assert threads == 3 and "cgroup quota 3" in why
    assert threads_per_rank({"LOCAL_WORLD_SIZE": "2"}, affinity=64, cgroup_root=v2)[0] == 1
    (v2 / "cpu.max").write_text("max 100000\n")
    assert threads_per_rank({}, affinity=64, cgroup_root=v2)[0] == 64
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("250000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert threads_per_rank({}, affinity=8, cgroup_root=v1)[0] == 2
    slurm = {"SLURM_CPUS_PER_TASK": "2", "SLURM_NTASKS_PER_NODE": "4"}
    threads, why = threads_per_rank(slurm, affinity=32, cgroup_root=tmp_path / "none")
    assert threads == 2 and "SLURM_CPUS_PER_TASK=2" in why and "4 rank(s)" in why
    # srun binds each task to its own CPUs: the affinity is already the task's share
    assert threads_per_rank({"SLURM_CPUS_PER_TASK": "4"}, affinity=4, cgroup_root=tmp_path / "none")[0] == 4


def test_threads_per_rank_follows_a_real_affinity_mask():
    mask = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(mask)})
        assert threads_per_rank({}, cgroup_root="/nonexistent")[0] == 1
    finally:
        os.sched_setaffinity(0, mask)


def test_auto_shard_size_takes_the_smallest_of_bytes_time_and_ranks():
    # 10^8 objects of 128x128 float32 (65,536 bytes + ~300 bytes of columns), 20 objects/s per rank
    size = auto_shard_size(10**8, 256, 65_836, 20.0, 64)
    assert size == 5888  # 5 min x 20 obj/s = 6,000 -> whole batches of 256 (bytes allow 16,309)
    assert auto_shard_size(10**8, 256, 65_836, 2000.0, 64) == (2**30 // 65_836) // 256 * 256  # 1 GiB cap
    assert auto_shard_size(10**6, 100, 100, 1e6, 1000) == 200  # ceil(10^6 / 4,000) = 250 -> 200
    assert auto_shard_size(1000, 256, 100, 1e6, 64) == 256  # never below one batch
    assert auto_shard_size(10**6, 100, 100, 1e6, 1, seconds=1, max_bytes=10**4) == 100
    with pytest.raises(CatalogError):
        auto_shard_size(10, 1, 0.0, 1.0, 1)


def test_manifests_without_a_size_keep_the_count_rule():
    assert count_auto_shard_size(2000, 256) == 256
    assert count_auto_shard_size(10**6, 100) == 4000
    assert count_auto_shard_size(10**8, 256) == 65536
