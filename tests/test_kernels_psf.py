"""convolve_psf against scipy.signal.fftconvolve, GalSim and its own adjoint."""

import galsim
import numpy as np
import pytest
import scipy.signal
import torch

from galhpc.kernels import backend, convolve_psf
from galhpc.kernels import psf as psf_module
from galhpc.kernels.psf import direct_convolve, fft_convolve

torch.set_num_threads(1)


def scipy_same(images: np.ndarray, psf: np.ndarray) -> np.ndarray:
    """Reference: one fftconvolve(mode='same') per 2-D image; psf (h, w) or per object (B, h, w)."""
    flat = images.reshape(images.shape[0], -1, *images.shape[-2:])
    out = np.empty_like(flat)
    for b in range(flat.shape[0]):
        kernel = psf if psf.ndim == 2 else psf[b]
        for c in range(flat.shape[1]):
            out[b, c] = scipy.signal.fftconvolve(flat[b, c], kernel, mode="same")
    return out.reshape(images.shape)


SHAPES = [  # (H, W, h, w): odd/even images and PSFs, PSF larger than the image
    (16, 17, 5, 4),
    (16, 17, 9, 8),
    (12, 10, 13, 21),
    (8, 8, 3, 3),
    (20, 20, 25, 25),
    (6, 7, 17, 16),  # PSF over twice the image: the FFT length is set by the PSF
]


@pytest.mark.parametrize("method", [direct_convolve, fft_convolve])
@pytest.mark.parametrize("H,W,h,w", SHAPES)
@pytest.mark.parametrize("per_object", [False, True])
def test_both_methods_match_scipy(method, H, W, h, w, per_object):
    rng = np.random.default_rng(H * 1000 + h * 10 + w)
    images = rng.normal(size=(3, 2, H, W))
    psf = rng.normal(size=(3, h, w) if per_object else (h, w))
    expected = scipy_same(images, psf)
    out4 = method(torch.from_numpy(images), torch.from_numpy(psf)).numpy()
    out3 = method(torch.from_numpy(images[:, 0]), torch.from_numpy(psf)).numpy()
    np.testing.assert_allclose(out4, expected, atol=1e-11)
    np.testing.assert_allclose(out3, expected[:, 0], atol=1e-11)


@pytest.mark.parametrize("n,h", [(128, 25), (128, 128), (16, 5), (17, 8), (6, 17)])
def test_same_fft_length_is_the_shortest_without_wrap_around(n, h):
    rng = np.random.default_rng(n + h)
    x, k = rng.normal(size=n), rng.normal(size=h)
    expected = np.convolve(x, k)[(h - 1) // 2 :][:n]

    def circular_same(length: int) -> np.ndarray:
        full = np.fft.irfft(np.fft.rfft(x, length) * np.fft.rfft(k, length), length)
        return full[((h - 1) // 2 + np.arange(n)) % length]

    shortest = max(n + h // 2, h)
    assert psf_module.same_fft_length(n, h) == psf_module.fast_length(shortest)
    np.testing.assert_allclose(circular_same(shortest), expected, atol=1e-10)
    if shortest > h:  # one sample shorter and the window wraps around
        assert np.abs(circular_same(shortest - 1) - expected).max() > 1e-3
    assert (psf_module.same_fft_length(128, 25), psf_module.same_fft_length(128, 128)) == (140, 192)


@pytest.mark.parametrize("h", [3, 9, 25])
def test_public_function_float32_and_numpy_io(h):
    rng = np.random.default_rng(h)
    images = rng.normal(size=(4, 32, 32)).astype(np.float32)
    psf = rng.random(size=(h, h)).astype(np.float32)
    out = convolve_psf(images, psf)
    assert isinstance(out, np.ndarray) and out.shape == images.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, scipy_same(images.astype(np.float64), psf.astype(np.float64)), atol=2e-4 * h)
    out_t = convolve_psf(torch.from_numpy(images), torch.from_numpy(psf))
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32
    np.testing.assert_allclose(out_t.numpy(), out, atol=1e-5)


def _galsim_case(galaxy, psf_profile, gsparams=None):
    scale = 0.2
    image = galaxy.drawImage(nx=64, ny=64, scale=scale).array.astype(np.float64)
    # Odd PSF stamp: GalSim's centre pixel (h - 1) / 2 is then scipy's 'same' centre.
    psf = psf_profile.drawImage(nx=25, ny=25, scale=scale, method="no_pixel").array.astype(np.float64)
    expected = galsim.Convolve(galaxy, psf_profile, gsparams=gsparams).drawImage(nx=64, ny=64, scale=scale).array
    out = convolve_psf(torch.from_numpy(image[None]), torch.from_numpy(psf))[0].numpy()
    return out, expected


def test_matches_galsim_gaussians_to_float_tolerance():
    out, expected = _galsim_case(galsim.Gaussian(sigma=0.6, flux=100.0).shear(e1=0.2, e2=-0.1),
                                 galsim.Gaussian(fwhm=0.8))
    peak = expected.max()
    assert np.abs(out - expected).max() < 1e-5 * peak
    # one pixel off-centre would be far outside that tolerance
    assert np.abs(np.roll(out, 1, axis=0) - expected).max() > 1e-2 * peak


def test_matches_galsim_sersic_with_moffat_psf():
    gsparams = galsim.GSParams(folding_threshold=1e-5, maxk_threshold=1e-6, kvalue_accuracy=1e-8)
    galaxy = galsim.Sersic(n=1.5, half_light_radius=1.0, flux=100.0, gsparams=gsparams).shear(e1=0.2, e2=-0.1)
    out, expected = _galsim_case(galaxy, galsim.Moffat(beta=3.0, fwhm=0.8, trunc=2.4, gsparams=gsparams), gsparams)
    # GalSim convolves in Fourier space with its own sampling accuracy (~6e-4 of the peak)
    assert np.abs(out - expected).max() < 2e-3 * expected.max()


@pytest.mark.parametrize("method", [direct_convolve, fft_convolve])
@pytest.mark.parametrize("per_object", [False, True])
def test_gradcheck_images_and_psf(method, per_object):
    gen = torch.Generator().manual_seed(int(per_object))
    images = torch.randn(2, 2, 5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    psf = torch.randn(*((2,) if per_object else ()), 4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(method, (images, psf))


@pytest.mark.parametrize("h", [5, 11])
def test_adjoint_is_correlation_with_the_psf(h):
    rng = np.random.default_rng(h)
    images = torch.from_numpy(rng.normal(size=(3, 24, 20))).requires_grad_()
    psf = rng.normal(size=(3, h, h))
    upstream = rng.normal(size=(3, 24, 20))
    (convolve_psf(images, torch.from_numpy(psf)) * torch.from_numpy(upstream)).sum().backward()
    expected = np.stack([scipy.signal.correlate(u, p, mode="same") for u, p in zip(upstream, psf, strict=False)])
    np.testing.assert_allclose(images.grad.numpy(), expected, atol=1e-10)


def test_psf_spectrum_is_cached_and_invalidated_by_in_place_change():
    psf_module._spectrum_cache.clear()
    images = torch.randn(2, 32, 32, dtype=torch.float64)
    psf = torch.rand(9, 9, dtype=torch.float64)
    first = fft_convolve(images, psf)
    assert len(psf_module._spectrum_cache) == 1
    (cached,) = [entry[2] for entry in psf_module._spectrum_cache.values()]
    fft_convolve(images, psf)
    assert [entry[2] for entry in psf_module._spectrum_cache.values()][0] is cached
    psf.mul_(2.0)
    torch.testing.assert_close(fft_convolve(images, psf), 2.0 * first)


def test_bad_inputs_get_clear_errors(monkeypatch):
    images = torch.zeros(2, 8, 8)
    with pytest.raises(ValueError, match="per-object psf has 3 PSFs for a batch of 2"):
        convolve_psf(images, torch.zeros(3, 3, 3))
    with pytest.raises(ValueError, match=r"images must be \(B, H, W\)"):
        convolve_psf(torch.zeros(8, 8), torch.zeros(3, 3))
    with pytest.raises(TypeError, match="floating point"):
        convolve_psf(torch.zeros(2, 8, 8, dtype=torch.int32), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="empty input"):
        convolve_psf(images, torch.zeros(0, 3))
    with pytest.raises(ValueError, match="unknown kernel backend 'fast'"):
        convolve_psf(images, torch.zeros(3, 3), backend="fast")
    with pytest.raises(ValueError, match="backend 'numba' is not implemented"):
        convolve_psf(images, torch.zeros(3, 3), backend="numba")
    monkeypatch.setenv(backend.ENV_VAR, "nonsense")
    with pytest.raises(ValueError, match=f"from {backend.ENV_VAR}"):
        convolve_psf(images, torch.zeros(3, 3))


@pytest.mark.parametrize("h", [3, 21])  # direct and FFT path
@pytest.mark.parametrize("per_object", [False, True])
@pytest.mark.parametrize("channels", [None, 2])
def test_chunked_batches_match_scipy_and_keep_gradients(monkeypatch, h, per_object, channels):
    monkeypatch.setattr(psf_module, "CHUNK_PIXELS", 1)  # one image per chunk
    rng = np.random.default_rng(h)
    shape = (5, 12, 11) if channels is None else (5, channels, 12, 11)
    images = torch.from_numpy(rng.normal(size=shape)).requires_grad_()
    psf = rng.normal(size=(5, h, h) if per_object else (h, h))
    out = convolve_psf(images, torch.from_numpy(psf))
    np.testing.assert_allclose(out.detach().numpy(), scipy_same(images.detach().numpy(), psf), atol=1e-11)
    upstream = rng.normal(size=shape)
    (out * torch.from_numpy(upstream)).sum().backward()
    flipped = np.ascontiguousarray(psf[..., ::-1, ::-1])  # odd PSF: the adjoint is 'same' conv with it flipped
    np.testing.assert_allclose(images.grad.numpy(), scipy_same(upstream, flipped), atol=1e-10)
