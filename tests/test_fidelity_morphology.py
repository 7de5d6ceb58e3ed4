"""statmorph wrapper: analytic Gaussian profiles give the known radii, ellipticity, concentration."""

import numpy as np
import pytest

from galhpc.fidelity import morphology
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


@pytest.mark.parametrize("n", [1.0, 2.5])
def test_sersic_index_and_half_light_radius_of_a_galsim_sersic(n):
    galsim = pytest.importorskip("galsim")
    hlr = 4.0  # pixels (scale 1)
    image = galsim.Sersic(n=n, half_light_radius=hlr, flux=5e4).drawImage(nx=48, ny=48, scale=1.0).array
    stats = morphology.measure(image + np.random.default_rng(0).normal(0, 1.0, image.shape))
    assert stats["sersic_n"] == pytest.approx(n, rel=0.12)
    # statmorph's r½ is the radius holding half the flux inside its own total aperture
    assert stats["half_light_radius"] == pytest.approx(hlr, rel=0.12)
    assert stats["flux"] == pytest.approx(5e4, rel=0.15)
    area = np.pi * stats["half_light_radius"] ** 2
    assert stats["log_sb_rhalf"] == pytest.approx(np.log10(0.5 * stats["flux"] / area))


def test_parallel_table_equals_the_serial_one():
    stack = np.stack([_blob(3 + i % 3, 2 + i % 2, seed=i, size=32) for i in range(10)])
    serial = morphology.morphology_table(stack, processes=1)
    parallel = morphology.morphology_table(stack, processes=2)
    assert set(serial) == set(morphology.STATISTICS)
    for name in morphology.STATISTICS:
        np.testing.assert_array_equal(serial[name], parallel[name])
