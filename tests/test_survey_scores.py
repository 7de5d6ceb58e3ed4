"""The real-data baseline of galhpc.report.survey: gappy PCA against independent oracles."""

import numpy as np

from galhpc.report.survey import SurveyStamps, gappy_pca_reconstructions


def _stamps(images, mask):
    n = len(images)
    return SurveyStamps(images, np.ones_like(images), mask, np.arange(n, dtype=np.int64))


def test_without_masked_pixels_gappy_pca_is_sklearns_pca():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    train, held = rng.normal(size=(60, 6, 6)), rng.normal(size=(9, 6, 6))
    none = np.zeros((60, 6, 6), bool)
    got = gappy_pca_reconstructions(_stamps(train, none), _stamps(held, none[:9]), n_components=4)
    pca = PCA(4, svd_solver="full").fit(train.reshape(60, -1))
    expected = pca.inverse_transform(pca.transform(held.reshape(9, -1))).reshape(held.shape)
    np.testing.assert_allclose(got, expected, atol=1e-9)


def test_gappy_pca_recovers_masked_pixels_of_low_rank_stamps_that_a_plain_pca_misses():
    """Stamps exactly in a 3-dimensional affine subspace, 20 % of the pixels masked and set
    to a bright clipped value: the gappy fit recovers the masked pixels of held-out stamps
    from their valid ones; a PCA that fits the masked values does not."""
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(1)
    basis, centre = rng.normal(size=(3, 64)), rng.normal(size=64)
    truth = centre + rng.normal(size=(209, 3)) @ basis
    mask = rng.random(truth.shape) < 0.2
    observed = np.where(mask, 20.0, truth)
    shape = (8, 8)
    got = gappy_pca_reconstructions(_stamps(observed[:200].reshape(-1, *shape), mask[:200].reshape(-1, *shape)),
                                    _stamps(observed[200:].reshape(-1, *shape), mask[200:].reshape(-1, *shape)),
                                    n_components=3, iterations=50)
    np.testing.assert_allclose(got.reshape(9, -1), truth[200:], atol=1e-3)
    plain = PCA(3, svd_solver="full").fit(observed[:200])
    missed = plain.inverse_transform(plain.transform(observed[200:]))
    assert np.abs(missed - truth[200:]).max() > 1.0
