"""galhpc-fidelity end to end on a tiny trained checkpoint, and the memorisation check on a
"generator" that returns its training stamps."""

import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from galhpc.fidelity import morphology


@pytest.mark.slow
def test_galhpc_fidelity_on_a_tiny_checkpoint(tiny_store, tiny_checkpoint, tmp_path, monkeypatch):
    from galhpc.cli.fidelity import main
    from galhpc.data.loader import holdout_mask
    from galhpc.fidelity import score as score_module
    from galhpc.io.store import open_store

    monkeypatch.setenv("GALHPC_PROGRESS", "0")
    out = tmp_path / "fidelity"
    assert main(["--checkpoint", str(tiny_checkpoint), "--out", str(out), "--n", "30", "--n-real", "30",
                 "--n-training", "90", "--bootstrap", "20", "--processes", "2"]) == 0
    table = Table.read(out / "fidelity.fits")
    assert list(table["statistic"]) == list(morphology.STATISTICS)
    csv = Table.read(out / "fidelity.csv", format="ascii.csv")
    np.testing.assert_allclose(csv["ks"], table["ks"], rtol=1e-6)
    header = fits.getheader(out / "fidelity.fits", 1)
    assert 0.0 <= header["AUC"] <= 1.0 and 0.0 <= header["AUCFLOOR"] <= 1.0 and 0.0 <= header["MEMP"] <= 1.0
    ok = np.isfinite(table["ks"])
    assert ok.sum() >= 10 and np.isfinite(table["floor_ks"][ok]).all() and (table["ks_err"][ok] > 0).all()
    # ks_target_met is the documented rule, row by row
    rule = (table["ks"] <= np.maximum(score_module.KS_TARGET, score_module.FLOOR_FACTOR * table["floor_ks"])) & ok
    np.testing.assert_array_equal(np.asarray(table["ks_target_met"], bool), rule)
    stamps = Table.read(out / "stamps.fits")
    assert sorted(set(stamps["set"])) == ["generated", "real"] and len(stamps) == 60
    summary = json.loads((out / "fidelity.json").read_text())
    assert summary["memorisation"]["n_training"] == 90 and summary["classifier"]["folds"] == 5
    assert (out / "histograms.png").stat().st_size > 0 and (out / "nearest.png").stat().st_size > 0

    # a "generator" that returns training stamps plus a whisper of noise fails the memorisation
    # check of the same scorer, while a fresh draw of held-out stamps passes it
    with open_store(tiny_store) as s:
        held = holdout_mask(len(s), 0.25, 0)
        train_rows = np.flatnonzero(~held)
        training, real = s.read("images", train_rows), s.read("images", np.flatnonzero(held))
    rng = np.random.default_rng(1)
    copies = training[rng.choice(len(training), 30)] + rng.normal(0, 1e-4, (30, *training.shape[1:]))
    real_table = {k: np.asarray(stamps[k][stamps["set"] == "real"], float) for k in morphology.STATISTICS}
    copied = score_module.score(copies, real[:30], training, n_boot=5, seed=2, real_table=real_table)
    assert copied.memorisation["p_value"] < 0.01 and copied.memorisation["median_ratio"] < 0.5
    assert copied.memorisation["copy_fraction"] > 0.9


@pytest.mark.slow
def test_galhpc_fidelity_refuses_a_missing_store(tmp_path, capsys):
    from galhpc.cli.fidelity import main

    assert main(["--synth", str(tmp_path / "nothing.h5"), "--out", str(tmp_path / "x")]) == 1
    assert "no training store" in capsys.readouterr().err
