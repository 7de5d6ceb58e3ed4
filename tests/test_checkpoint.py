import pytest
import torch

from galhpc.checkpoint import CheckpointError, read_checkpoint, save_checkpoint


def test_save_is_atomic_and_readable(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt.pt", {"model_state": {"w": torch.ones(2)}, "config": ""})
    assert read_checkpoint(path)["model_state"]["w"].sum() == 2
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_truncated_checkpoint_is_named(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt.pt", {"model_state": {"w": torch.ones(1000)}, "config": ""})
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="ckpt.pt is unreadable"):
        read_checkpoint(path)


def test_foreign_file_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": 1}, path)
    with pytest.raises(CheckpointError, match="not a galhpc checkpoint"):
        read_checkpoint(path)
