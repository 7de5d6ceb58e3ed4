"""statmorph wrapper: analytic Gaussian profiles give the known radii, ellipticity, concentration."""

import numpy as np
import pytest

from galhpc.report import morphology
from galhpc.report.regier import gaussian_image


def _blob(sx, sy, noise=0.01, seed=0, size=64):
    theta = np.array([1.0, size / 2, size / 2, np.log(sx), np.log(sy), 0.0])
    return gaussian_image(theta, (size, size)) + np.random.default_rng(seed).normal(0, noise, (size, size))


def test_segment_galaxy_finds_central_source():
    img = _blob(4, 4)
    img[5:8, 5:8] += 1.0  # a bright corner artefact must not be chosen
    sub, segmap, sigma = morphology.segment_galaxy(img)
    assert segmap[32, 32] == 1 and segmap[6, 6] == 0
    assert sigma == pytest.approx(0.01, rel=0.3)


def test_circular_gaussian_statistics():
    sigma = 4.0
    stats = morphology.measure(_blob(sigma, sigma))
    # half-light radius and concentration 5 log10(r80/r20) of a 2-D Gaussian
    assert stats["half_light_radius"] == pytest.approx(sigma * np.sqrt(2 * np.log(2)), rel=0.08)
    r = lambda f: sigma * np.sqrt(-2 * np.log(1 - f))  # noqa: E731
    assert stats["concentration"] == pytest.approx(5 * np.log10(r(0.8) / r(0.2)), abs=0.15)
    assert stats["ellipticity"] < 0.05 and abs(stats["asymmetry"]) < 0.05


def test_elongated_gaussian_ellipticity_and_ks():
    stats = morphology.measure(_blob(6, 3))
    assert stats["ellipticity"] == pytest.approx(0.5, abs=0.05)
    table = morphology.morphology_table(np.stack([_blob(6, 3, seed=1), np.zeros((64, 64))])[:, None])
    assert np.isfinite(table["gini"][0]) and np.isnan(table["gini"][1])  # a blank stamp is flagged, not fatal
    real = {name: np.ones(3) for name in morphology.STATISTICS} | {"gini": np.array([0.1, 0.2, 0.3])}
    generated = {name: np.array([0.7, 0.8]) for name in morphology.STATISTICS}
    ks = morphology.compare_tables(real, generated)
    assert ks["gini"]["ks"] == pytest.approx(1.0) and ks["gini"]["n_b"] == 2


def test_noise_matching_restores_the_real_sky_sigma():
    rng = np.random.default_rng(5)
    clean = np.stack([_blob(4, 3, noise=0.0) for _ in range(4)])
    assert morphology.median_sky_sigma(clean) < 1e-6
    noisy = morphology.add_noise(clean, 0.03, rng)
    assert morphology.median_sky_sigma(noisy) == pytest.approx(0.03, rel=0.2)
