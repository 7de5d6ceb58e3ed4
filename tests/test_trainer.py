"""The trainer on a real (small) HDF5 store: files, exact resume after a signal, the s3VDC
mixture initialisation, refusals and non-finite losses."""

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from galhpc.checkpoint import CheckpointError, checkpoint_config, load_model, read_checkpoint
from galhpc.config import ModelConfig, RunConfig, ScheduleConfig, TrainConfig
from galhpc.data.sources import Block, DataError
from galhpc.data.store import StoreWriter
from galhpc.train.distributed import SingleProcess
from galhpc.train.trainer import EXIT_INTERRUPTED, NonFiniteLossError, Trainer, TrainingInterrupted, train

torch.set_num_threads(1)
ORIGINAL_STEP = Trainer.train_step
ORIGINAL_FLUSH = Trainer.flush_terms


def toy_galaxies(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Min-max normalised Sérsic-like stamps: class 0 wide exponential discs, 1 compact cores."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    cls = rng.integers(0, 2, n)
    q = rng.uniform(0.4, 1.0, n)[:, None, None]
    angle = rng.uniform(0, np.pi, n)[:, None, None]
    u = np.cos(angle) * xx + np.sin(angle) * yy
    v = (-np.sin(angle) * xx + np.cos(angle) * yy) / q
    r = np.hypot(u, v)
    scale = np.where(cls == 0, size / 8, size / 24)[:, None, None]
    img = np.exp(-r / scale) + 0.03 * rng.standard_normal((n, size, size))
    lo, hi = img.min(axis=(1, 2), keepdims=True), img.max(axis=(1, 2), keepdims=True)
    return ((img - lo) / (hi - lo)).astype(np.float32), cls


# not the shared tiny_store: two sharp morphology classes the tests count on, and a NaN pixel on demand
def write_store(path, n=160, size=32, nan_at=None):
    images, cls = toy_galaxies(n, size)
    if nan_at is not None:
        images[nan_at, 3, 3] = np.nan
    block = Block(images=images, object_id=np.arange(n, dtype=np.int64), labels={"morph_class": cls})
    with StoreWriter(path, "prep: {}\n", chunk_rows=32) as writer:
        writer.append(block)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("store") / "toy.h5")


def vae_config(store, out_dir, epochs=2, **model_params):
    params = {"filters": [8, 8, 8, 8], "recon": "mse", **model_params}
    return RunConfig(
        model=ModelConfig(name="vae", image_size=32, latent_dim=4, params=params),
        train=TrainConfig(store=str(store), out_dir=str(out_dir), epochs=epochs, batch_size=32, threads=1,
                          holdout_fraction=0.2, backend="single", device="cpu", lr=1e-3, lr_final=1e-4),
    )


def vader_config(store, out_dir):
    return RunConfig(
        model=ModelConfig(name="astrovader", image_size=32, latent_dim=3,
                          params={"n_clusters": 2, "filters": [4, 4, 4], "kernels": [3, 3, 3]}),
        schedule=ScheduleConfig(enabled=True, t_alpha=1, gmm_init_batches=4, t_beta=1, t_static=1, periods=1,
                                dp_max_components=3, dp_batches=2),
        train=TrainConfig(store=str(store), out_dir=str(out_dir), epochs=3, batch_size=32, threads=1,
                          holdout_fraction=0.2, backend="single", device="cpu", lr=1e-3),
    )


class Recorder:
    """Wraps Trainer.train_step: records every step's loss terms, optionally signals at a step."""

    def __init__(self, monkeypatch, signal_at_step=None):
        self.losses, self.signal_at = [], signal_at_step
        recorder = self

        def step(trainer, batch):
            ORIGINAL_STEP(trainer, batch)
            if trainer.pos.step + 1 == recorder.signal_at:
                os.kill(os.getpid(), signal.SIGUSR1)

        def flush(trainer):  # the checked terms of every step, in step order
            rows = ORIGINAL_FLUSH(trainer)
            recorder.losses.extend(rows)
            return rows

        monkeypatch.setattr(Trainer, "train_step", step)
        monkeypatch.setattr(Trainer, "flush_terms", flush)


def test_training_writes_checkpoint_and_csv_and_draws_nothing(store, tmp_path):
    cfg = vae_config(store, tmp_path / "run")
    result = train(cfg, backend=SingleProcess("cpu"))
    assert result.checkpoint == tmp_path / "run" / "ckpt.pt" and result.epochs == 2
    assert result.steps == 2 * (128 // 32)
    with open(tmp_path / "run" / "losses.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert {"recon", "kl", "total", "holdout_mse", "kl_weight", "lr"} <= set(rows[0])
    assert all(np.isfinite(float(r["total"])) for r in rows)
    assert not (tmp_path / "run" / "losses.png").exists()  # the figure is the report's
    payload = read_checkpoint(result.checkpoint)
    assert payload["position"] == {"epoch": 2, "batch": 0, "step": 8, "sums": {}}
    assert {"optimizer_state", "rng", "history", "model_name"} <= set(payload)
    load_model(result.checkpoint, expect="vae")  # the weights fit the model its config names
    loaded_cfg = checkpoint_config(read_checkpoint(result.checkpoint))
    assert loaded_cfg == cfg


def test_resume_after_signal_continues_exactly(store, tmp_path, monkeypatch):
    """Uninterrupted run vs. a run stopped by SIGUSR1 mid-epoch and resumed: same losses, same weights."""
    full = Recorder(monkeypatch)
    reference = train(vae_config(store, tmp_path / "a", epochs=3), backend=SingleProcess("cpu"))
    ref_losses = list(full.losses)

    interrupted = Recorder(monkeypatch, signal_at_step=6)  # batch 2 of epoch 1
    with pytest.raises(TrainingInterrupted) as stop:
        train(vae_config(store, tmp_path / "b", epochs=3), backend=SingleProcess("cpu"))
    assert stop.value.code == EXIT_INTERRUPTED and stop.value.step == 6
    assert read_checkpoint(tmp_path / "b" / "ckpt.pt")["position"]["batch"] == 2
    resumed = Recorder(monkeypatch)
    result = train(vae_config(store, tmp_path / "b", epochs=3), backend=SingleProcess("cpu"))
    assert result.steps == reference.steps == 12
    assert interrupted.losses + resumed.losses == ref_losses  # bitwise, every term of every step
    a = read_checkpoint(reference.checkpoint)["model_state"]
    b = read_checkpoint(result.checkpoint)["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    def timeless(history):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in history]

    assert timeless(result.history) == timeless(reference.history)  # epoch means and holdout MSE too


def test_mid_epoch_checkpoint_refuses_another_data_layout(store, tmp_path, monkeypatch):
    """A stop mid-epoch saved with batch size 32 cannot resume with 16: its batch index would mean other rows."""
    Recorder(monkeypatch, signal_at_step=2)
    with pytest.raises(TrainingInterrupted):
        train(vae_config(store, tmp_path / "run", epochs=2), backend=SingleProcess("cpu"))
    cfg = vae_config(store, tmp_path / "run", epochs=2)
    cfg.train.batch_size = 16
    with pytest.raises(CheckpointError, match="stopped mid-epoch with data layout"):
        train(cfg, backend=SingleProcess("cpu"))


def test_astrovader_schedule_initialises_the_mixture_and_resumes_across_it(store, tmp_path, monkeypatch):
    cfg = vader_config(store, tmp_path / "v")
    full = Recorder(monkeypatch)
    result = train(cfg, backend=SingleProcess("cpu"))
    ref_losses = list(full.losses)
    assert [row["phase"] for row in result.history] == ["alpha", "anneal", "static"]
    assert result.history[0]["kl_weight"] == pytest.approx(5e-4)
    assert result.stick_breaking_k is not None and 1 <= result.stick_breaking_k <= 3
    model = load_model(result.checkpoint, expect="astrovader")
    torch.manual_seed(0)
    fresh = type(model)(32, 1, 3, n_clusters=2, filters=[4, 4, 4], kernels=[3, 3, 3])
    assert not torch.allclose(model.mu_c, fresh.mu_c)  # fitted, not the random start

    Recorder(monkeypatch, signal_at_step=5)  # stops in epoch 1, after the mixture init
    with pytest.raises(TrainingInterrupted):
        train(vader_config(store, tmp_path / "w"), backend=SingleProcess("cpu"))
    before = Recorder(monkeypatch)
    train(vader_config(store, tmp_path / "w"), backend=SingleProcess("cpu"))
    assert before.losses == ref_losses[5:]


def test_resume_refuses_a_checkpoint_of_another_model_config(store, tmp_path):
    train(vae_config(store, tmp_path / "run", epochs=1), backend=SingleProcess("cpu"))
    other = vae_config(store, tmp_path / "run", epochs=2, objective="beta")
    with pytest.raises(CheckpointError, match="another model config"):
        train(other, backend=SingleProcess("cpu"))
    result = train(other, backend=SingleProcess("cpu"), resume=False)
    assert result.steps == 8


def test_non_finite_loss_names_step_and_term(tmp_path):
    bad = write_store(tmp_path / "bad.h5", n=64, nan_at=list(range(64)))
    cfg = vae_config(bad, tmp_path / "run")
    cfg.train.holdout_fraction = 0.0
    # NaN pixels: the error names the store and the objects as well as the step and the term
    with pytest.raises(DataError, match=r"bad\.h5: NaN/inf pixels in object_id .*"
                                        r"loss term 'recon' is nan at step 0 \(epoch 0, batch 0\)") as caught:
        train(cfg, backend=SingleProcess("cpu"))
    assert isinstance(caught.value.__cause__, NonFiniteLossError)


def test_nan_pixels_in_a_models_initialisation_batches_are_named_before_the_fit(tmp_path, caplog):
    """A depth prior's start is fitted before the first step: NaN pixels there are one DataError
    naming the objects (not a Cholesky traceback), and too few stamps for the start warn."""
    bad = write_store(tmp_path / "bad.h5", n=64, nan_at=[3, 17])
    cfg = vader_config(bad, tmp_path / "run")
    cfg.model.params.update(depth_prior=True)
    cfg.train.holdout_fraction = 0.0
    with pytest.raises(DataError, match=r"bad\.h5: NaN/inf pixels in object_id .*2 of the stamps astrovader "
                                        r"initialises from"):
        train(cfg, backend=SingleProcess("cpu"))
    good = write_store(tmp_path / "good.h5", n=64)
    cfg = vader_config(good, tmp_path / "run2")
    cfg.model.params.update(depth_prior=True)
    cfg.train.epochs = 1
    with caplog.at_level("WARNING", logger="galhpc.train.inputs"):
        train(cfg, backend=SingleProcess("cpu"))
    assert "astrovader initialises from 20 batches but the training split has only 2" in caplog.text


def test_cli_help_and_overrides(tmp_path, store, capsys):
    from galhpc.cli.train import main

    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0 and "--no-resume" in capsys.readouterr().out
    cfg = vae_config(store, tmp_path / "ignored", epochs=5)
    path = tmp_path / "cfg.yaml"
    path.write_text(cfg.to_yaml())
    assert main(["--config", str(path), "--out", str(tmp_path / "cli"), "--epochs", "1"]) == 0
    assert read_checkpoint(tmp_path / "cli" / "ckpt.pt")["position"]["epoch"] == 1
    assert main(["--config", str(tmp_path / "missing.yaml")]) == 1


@pytest.mark.slow
def test_sigterm_to_the_cli_process_checkpoints_exits_75_and_resumes(tmp_path, store):
    cfg = vae_config(store, tmp_path / "run", epochs=40)
    path = tmp_path / "cfg.yaml"
    path.write_text(cfg.to_yaml())
    cmd = [sys.executable, "-m", "galhpc.cli.train", "--config", str(path)]
    env = {**os.environ, "GALHPC_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # wait until training runs (first epoch logged)
        if "epoch 0" in line:
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_INTERRUPTED, err
    stopped_at = read_checkpoint(tmp_path / "run" / "ckpt.pt")["position"]["step"]
    assert 4 <= stopped_at < 160
    cfg.train.epochs = 2 + stopped_at // 4
    path.write_text(cfg.to_yaml())
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"resuming from {tmp_path / 'run' / 'ckpt.pt'}" in done.stderr
    assert read_checkpoint(tmp_path / "run" / "ckpt.pt")["position"]["epoch"] == cfg.train.epochs


def test_nothing_under_train_draws_or_opens_hdf5_itself():
    """The loss-curve figure is the report's and the store is read through galhpc.data: train/ imports neither."""
    import galhpc.train

    sources = {p.name: p.read_text() for p in Path(galhpc.train.__file__).parent.glob("*.py")}
    assert [name for name, text in sources.items() if "matplotlib" in text or "import h5py" in text] == []
