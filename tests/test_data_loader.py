"""StoreLoader: row order, sharding, holdout, resume, flips, block reads (store written by hand)."""

import h5py
import numpy as np
import pytest
import torch

from galhpc.data import loader as loader_mod
from galhpc.data.loader import StoreLoader, holdout_mask
from galhpc.data.sources import Block, DataError
from galhpc.data.store import StoreWriter, locate_column, read_store_info

torch.set_num_threads(1)
N, H = 203, 8


def _images(n: int) -> np.ndarray:
    """Image i: value i everywhere plus a pixel ramp, so flips and rows are recognisable."""
    ramp = np.arange(H * H, dtype=np.float32).reshape(H, H) / 1000.0
    return np.arange(n, dtype=np.float32)[:, None, None] + ramp


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "s.h5"
    imgs = _images(N)
    with StoreWriter(path, "prep: {}\n", chunk_rows=16) as w:
        for a in range(0, N, 50):
            b = min(a + 50, N)
            labels = {"cls": np.arange(a, b) % 3, "name": np.array([f"g{i}" for i in range(a, b)])}
            w.append(Block(imgs[a:b], np.arange(a, b, dtype=np.int64) + 1000, labels))
    return path


def test_store_info(store):
    info = read_store_info(store)
    assert (info.n, info.image_shape, info.channels, info.chunk_rows) == (N, (H, H), 1, 16)
    assert info.label_names == ["cls", "name", "source_index"]
    assert info.config == "prep: {}\n"


def test_batches_hold_the_rows_they_name(store):
    loader = StoreLoader(store, 10, split="all", label_columns=["cls", "name"])
    seen = []
    for batch in loader:
        idx = batch["index"].numpy()
        assert batch["image"].shape == (10, 1, H, H) and batch["image"].dtype == torch.float32
        np.testing.assert_array_equal(batch["image"][:, 0, 0, 0].numpy(), idx)
        np.testing.assert_array_equal(batch["object_id"].numpy(), idx + 1000)
        np.testing.assert_array_equal(batch["cls"].numpy(), idx % 3)
        assert batch["name"] == [f"g{i}" for i in idx]
        seen.extend(idx)
    assert len(seen) == len(loader) * 10 == 200 and len(set(seen)) == 200


def test_holdout_is_deterministic_and_disjoint(store):
    mask = holdout_mask(N, 0.1, seed=3)
    assert mask.sum() == round(N * 0.1)
    np.testing.assert_array_equal(mask, holdout_mask(N, 0.1, seed=3))
    assert not np.array_equal(mask, holdout_mask(N, 0.1, seed=4))
    train = StoreLoader(store, 1, split="train", seed=3, drop_last=False)
    hold = StoreLoader(store, 1, split="holdout", seed=3, drop_last=False)
    tr = {int(b["index"]) for b in train}
    ho = {int(b["index"]) for b in hold}
    assert not tr & ho and len(tr | ho) == N
    assert ho == set(np.flatnonzero(mask))


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_get_disjoint_equal_shards(store, world):
    loaders = [StoreLoader(store, 7, split="all", rank=r, size=world, drop_last=False) for r in range(world)]
    parts = [np.concatenate([b["index"].numpy() for b in ld]) for ld in loaders]
    assert len({len(p) for p in parts}) == 1 and len(parts[0]) == N // world
    assert len(set(np.concatenate(parts))) == world * (N // world)
    assert len({len(ld) for ld in loaders}) == 1


def test_order_is_pure_function_of_seed_and_epoch(store):
    a = StoreLoader(store, 8, seed=1, drop_last=False)
    b = StoreLoader(store, 8, seed=1, drop_last=False)
    first = [x["index"] for x in a]
    assert all(torch.equal(x, y["index"]) for x, y in zip(first, b, strict=False))
    a.set_epoch(1)
    second = [x["index"] for x in a]
    assert not all(torch.equal(x, y) for x, y in zip(first, second, strict=False))
    assert sorted(torch.cat(first).tolist()) == sorted(torch.cat(second).tolist())
    unshuffled = StoreLoader(store, 8, split="all", shuffle=False)
    assert torch.cat([x["index"] for x in unshuffled]).tolist() == list(range(len(unshuffled) * 8))


def test_iter_from_resumes_exactly(store):
    ld = StoreLoader(store, 9, augment=True, seed=5)
    ld.set_epoch(2)
    full = list(ld)
    resumed = StoreLoader(store, 9, augment=True, seed=5)
    resumed.set_epoch(2)
    tail = list(resumed.iter_from(4))
    assert len(tail) == len(full) - 4
    for x, y in zip(full[4:], tail, strict=False):
        assert torch.equal(x["index"], y["index"]) and torch.equal(x["image"], y["image"])


def test_flips_are_flips_and_reproducible(store):
    ld = StoreLoader(store, 16, split="all", augment=True, seed=2)
    batch = next(iter(ld))
    plain = _images(N)[batch["index"].numpy()]
    kinds = set()
    for img, ref in zip(batch["image"][:, 0].numpy(), plain, strict=False):
        options = {"none": ref, "h": ref[:, ::-1], "v": ref[::-1, :], "hv": ref[::-1, ::-1]}
        match = [k for k, v in options.items() if np.array_equal(img, v)]
        assert len(match) == 1
        kinds.add(match[0])
    assert len(kinds) >= 3  # 16 images: all four kinds are overwhelmingly likely
    again = next(iter(StoreLoader(store, 16, split="all", augment=True, seed=2)))
    assert torch.equal(batch["image"], again["image"])


def test_reads_whole_blocks_about_once_per_epoch(store, monkeypatch):
    reads = []
    original = loader_mod._BlockCache.block

    def counting(self, b):
        if b not in self.blocks:
            reads.append(b)
        return original(self, b)

    monkeypatch.setattr(loader_mod._BlockCache, "block", counting)
    ld = StoreLoader(store, 10, split="all", window_blocks=4)
    list(ld)
    n_blocks = -(-N // 16)
    assert len(reads) == len(set(reads)) == n_blocks


@pytest.mark.parametrize("compression", ["lzf", "gzip"])
def test_compressed_store_reads_the_same(tmp_path, compression):
    path = tmp_path / "c.h5"
    imgs = _images(40)
    with StoreWriter(path, "", chunk_rows=8, compression=compression) as w:
        w.append(Block(imgs, np.arange(40), {"a": np.arange(40.0)}))
    with h5py.File(path) as f:
        assert f["images"].compression == compression and f["labels/a"].compression is None
    for batch in StoreLoader(path, 10, split="all"):
        np.testing.assert_array_equal(batch["image"][:, 0].numpy(), imgs[batch["index"].numpy()])
    with pytest.raises(DataError, match="compression must be"):
        StoreWriter(tmp_path / "d.h5", "", compression="zstd")


def test_multiband_store_and_bad_requests(tmp_path):
    path = tmp_path / "rgb.h5"
    with StoreWriter(path, "", chunk_rows=4) as w:
        w.append(Block(np.ones((10, 3, H, H), np.float32), np.arange(10)))
    batch = next(iter(StoreLoader(path, 5, split="all")))
    assert batch["image"].shape == (5, 3, H, H)
    with pytest.raises(DataError, match="no label column"):
        StoreLoader(path, 5, label_columns=["nope"])
    with pytest.raises(DataError, match="too few"):
        StoreLoader(path, 5, split="holdout", holdout_fraction=0.05)
    with pytest.raises(DataError, match="not found"):
        StoreLoader(tmp_path / "missing.h5", 5)


def test_writer_publishes_only_complete_stores(tmp_path):
    path = tmp_path / "x.h5"
    with pytest.raises(RuntimeError), StoreWriter(path, "") as w:
        w.append(Block(np.ones((3, H, H), np.float32), np.arange(3)))
        raise RuntimeError("killed mid-prep")
    assert list(tmp_path.iterdir()) == []
    with StoreWriter(path, "") as w:
        w.append(Block(np.ones((3, H, H), np.float32), np.arange(3), {"a": np.ones(3)}))
        w.append(Block(np.ones((2, H, H), np.float32), np.arange(3, 5), {"b": np.arange(2)}))
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["labels/a"][:], [1, 1, 1, np.nan, np.nan])
        np.testing.assert_array_equal(f["labels/b"][:], [-1, -1, -1, 0, 1])
    assert [p.name for p in tmp_path.iterdir()] == ["x.h5"]


def test_truth_masks_and_psf_columns_flip_with_the_image(tmp_path):
    path = tmp_path / "extras.h5"
    imgs = _images(12)
    masks = (imgs > imgs.mean(axis=(1, 2), keepdims=True)).astype(np.uint8)
    with StoreWriter(path, "", chunk_rows=4) as w:
        block = Block(imgs, np.arange(12), truth=2 * imgs, psf=np.eye(5, dtype=np.float32), extras={"masks": masks})
        w.append(block)
    ld = StoreLoader(path, 6, split="all", augment=True, seed=1, label_columns=["truth", "masks", "psf"])
    for batch in ld:
        assert torch.equal(batch["truth"], 2 * batch["image"][:, 0])
        expect = (batch["image"][:, 0] > batch["image"][:, 0].mean(dim=(1, 2), keepdim=True)).to(torch.uint8)
        assert batch["masks"].dtype == torch.uint8 and torch.equal(batch["masks"], expect)
        assert torch.equal(batch["psf"], torch.eye(5))
    with pytest.raises(DataError, match="no label column or dataset"):
        StoreLoader(path, 6, label_columns=["segmentation"])


def test_a_split_smaller_than_one_batch_is_an_error(store):
    with pytest.raises(DataError, match="fewer than one batch"):
        StoreLoader(store, 64, split="holdout", holdout_fraction=0.1)
    assert len(StoreLoader(store, 64, split="holdout", holdout_fraction=0.1, drop_last=False)) == 1


def test_locate_column_is_the_one_rule_for_store_columns(tmp_path):
    path = tmp_path / "columns.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((6, 4, 4), np.float32)
        f["object_id"] = np.arange(6)
        f.create_dataset("truth", data=np.zeros((6, 4, 4)), chunks=(1, 4, 4))
        f["psf"] = np.ones((6, 3))  # 6 rows but contiguous: one shared array, not per object
        f["labels/flux"] = np.arange(6.0)
        f["flux"] = np.zeros(6)  # the label column wins over a root dataset of the same name
        f.create_group("extra")
    with h5py.File(path, "r") as f:
        assert locate_column(f, "flux", 6) == ("labels/flux", True)
        assert locate_column(f, "truth", 6) == ("truth", True)
        assert locate_column(f, "truth", 7) == ("truth", False)
        assert locate_column(f, "psf", 6) == ("psf", False)
        assert [locate_column(f, name, 6) for name in ("images", "object_id", "extra", "nothing")] == [None] * 4
