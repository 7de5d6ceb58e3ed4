"""Latent constructions and loss-history parsing of the report."""

import numpy as np
import pytest

from galhpc.report import latents
from galhpc.report.losses import loss_table, read_loss_history


def test_traversal_sweeps_one_latent_and_holds_the_rest_at_the_mean():
    mu = np.array([[0.0, 10.0, -1.0], [2.0, 20.0, 1.0], [4.0, 60.0, 3.0]])
    grid = latents.traversal(mu, dims=[1, 2], steps=5)
    assert grid.shape == (2, 5, 3)
    np.testing.assert_allclose(grid[0, :, 1], np.linspace(10, 60, 5))
    np.testing.assert_allclose(grid[0, :, [0, 2]], np.tile([[2.0], [1.0]], 5))
    np.testing.assert_allclose(grid[1, :, 2], np.linspace(-1, 3, 5))


def test_interpolate_and_route():
    path = latents.interpolate(np.zeros(2), np.array([4.0, 8.0]), 5)
    np.testing.assert_allclose(path[:, 1], [0, 2, 4, 6, 8])
    centres = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    legs = latents.route(centres, [2, 0, 1], 3)
    assert legs.shape == (2, 3, 2)
    np.testing.assert_allclose(legs[0, 0], centres[2])
    np.testing.assert_allclose(legs[1, -1], centres[1])
    np.testing.assert_allclose(legs[0, -1], legs[1, 0])


def test_nearest_partners_matches_brute_force():
    rng = np.random.default_rng(0)
    q, c = rng.normal(size=(7, 4)), rng.normal(size=(30, 4))
    brute = [int(np.argmin([np.linalg.norm(a - b) for b in c])) for a in q]
    assert latents.nearest_partners(q, c).tolist() == brute


def test_loss_table_columns_phases_and_csv(tmp_path):
    (tmp_path / "losses.csv").write_text("epoch,step,phase,recon,kl,note,seconds\n"
                                         "0,0,alpha,5,1,x,1\n0,10,alpha,4,,y,1\n1,20,beta,3,2,z,1\n")
    rows = read_loss_history(tmp_path / "ckpt.pt", {})
    columns, x_name, phases = loss_table(rows)
    assert x_name == "step" and list(columns) == ["step", "recon", "kl"]  # epoch and text left out
    assert np.isnan(columns["kl"][1]) and phases.tolist() == ["alpha", "alpha", "beta"]


def test_loss_history_from_payload_and_missing(tmp_path):
    history = [{"epoch": 0, "loss": 2.0}, {"epoch": 1, "loss": 1.0}]
    columns, x_name, phases = loss_table(read_loss_history(tmp_path / "ckpt.pt", {"history": history}))
    assert x_name == "epoch" and columns["loss"].tolist() == [2.0, 1.0] and phases is None
    assert read_loss_history(tmp_path / "ckpt.pt", {}) is None
    with pytest.raises(ValueError, match="empty"):
        loss_table([])


def test_class_condition_is_read_from_conditional_generators_only():
    from galhpc.models.base import GalaxyModel, SampleCondition
    from galhpc.report.model_calls import class_condition

    class Conditional(GalaxyModel):
        generative = True
        sample_condition = SampleCondition("class", "morph_class", 3)

    class FloatConditional(Conditional):
        sample_condition = SampleCondition("float", "disk_hlr")

    assert class_condition(Conditional()) == ("morph_class", 3)
    assert class_condition(FloatConditional()) is None
    assert class_condition(GalaxyModel()) is None
