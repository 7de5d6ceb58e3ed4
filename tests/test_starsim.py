"""GalSim star/galaxy fields: shapes, determinism, truth labels, masks and source errors."""

import numpy as np
import pytest
import torch

from galhpc.config import ConfigError, PrepConfig, SourceConfig
from galhpc.data import starsim
from galhpc.data.sources import source_reader

torch.set_num_threads(1)


def test_block_shapes_labels_and_determinism():
    opts = starsim.StarSimOptions(neighbour_probability=0.5)
    block = starsim.simulate_block(opts, 24, seed=3, start=5, stop=15)
    assert block.images.shape == (10, 5, 24, 24) and block.images.dtype == np.float32
    assert block.extras["masks"].shape == (10, 24, 24) and block.extras["masks"].dtype == np.uint8
    np.testing.assert_array_equal(block.object_id, np.arange(5, 15))
    assert set(np.unique(block.labels["is_star"])) <= {0, 1}
    for band in "ugriz":
        assert block.labels[f"mag_{band}"].shape == (10,)
    again = starsim.simulate_block(opts, 24, seed=3, start=10, stop=12)  # same objects, other block
    np.testing.assert_array_equal(again.images, block.images[5:7])
    np.testing.assert_array_equal(again.extras["masks"], block.extras["masks"][5:7])


def test_stars_are_point_sources_and_galaxies_extended():
    opts = starsim.StarSimOptions(star_fraction=0.5, mag_min=18, mag_max=19, hlr_min=0.6)
    block = starsim.simulate_block(opts, 32, seed=0, start=0, stop=40)
    grey = block.images.sum(axis=1)
    concentration = grey[:, 14:19, 14:19].sum((1, 2)) / grey[:, 6:26, 6:26].sum((1, 2))
    stars = block.labels["is_star"] == 1
    assert 5 < stars.sum() < 35
    assert concentration[stars].min() > concentration[~stars].max()
    assert np.all(block.labels["hlr"][stars] == 0) and np.all(block.labels["hlr"][~stars] >= 0.6)


def test_magnitudes_set_the_flux_per_band():
    opts = starsim.StarSimOptions(star_fraction=1.0, noise_sigma=(1e-3,) * 5, mag_min=18, mag_max=20)
    block = starsim.simulate_block(opts, 48, seed=1, start=0, stop=4)
    flux = block.images.sum(axis=(2, 3))  # (n, bands); the 48px stamp holds > 99% of a star's light
    for b, band in enumerate("ugriz"):
        expected = 10 ** (-0.4 * (block.labels[f"mag_{band}"] - opts.zeropoint))
        np.testing.assert_allclose(flux[:, b], expected, rtol=0.02)


def test_masks_follow_the_classes_and_cover_the_objects():
    opts = starsim.StarSimOptions(neighbour_probability=0.0, mag_min=18, mag_max=19)
    block = starsim.simulate_block(opts, 32, seed=2, start=0, stop=20)
    masks = block.extras["masks"]
    for mask, is_star in zip(masks, block.labels["is_star"], strict=False):
        expected = starsim.MASK_STAR if is_star else starsim.MASK_GALAXY
        assert set(np.unique(mask)) == {starsim.MASK_BACKGROUND, expected}
        assert mask[16, 16] == expected and mask[0, 0] == starsim.MASK_BACKGROUND
    neighbours = starsim.simulate_block(starsim.StarSimOptions(neighbour_probability=1.0, mag_max=19), 32, 2, 0, 30)
    mixed = [set(np.unique(m))
             for m, ns in zip(neighbours.extras["masks"], neighbours.labels["neighbour_is_star"], strict=False)]
    assert any(s == {0, 1, 2} for s in mixed)  # a star next to a galaxy labels both


def test_read_source_is_registered_and_checks_options():
    reader = source_reader("galsim_stars")
    prep = PrepConfig(image_size=16, chunk_rows=4, workers=1)
    blocks = list(reader(SourceConfig(kind="galsim_stars", n=10, seed=4), prep))
    assert [len(b) for b in blocks] == [4, 4, 2]
    with pytest.raises(ConfigError, match=r"source galsim_stars .*unknown option.*'nois'"):
        list(reader(SourceConfig(kind="galsim_stars", n=2, options={"nois": 1}), prep))
    with pytest.raises(ConfigError, match="one value per band"):
        list(reader(SourceConfig(kind="galsim_stars", n=2, options={"bands": ["g", "r"]}), prep))
    with pytest.raises(ConfigError, match="n must be >= 1"):
        list(reader(SourceConfig(kind="galsim_stars", n=0), prep))
