"""PSF convolution of batched images: zero-padded, centred like scipy's fftconvolve "same".

No wrap-around; differentiable with respect to images and PSF.

Large PSFs go through the FFT (the PSF's spectrum is cached per PSF tensor and FFT
shape, and the transform is only as long as the 'same' window needs); small PSFs through
direct (depthwise) convolution, which is faster there.  On cuda tensors torch.fft runs
cuFFT and the broadcast spectrum product is one elementwise kernel, so the same torch code
is the GPU path (not yet timed on GPU hardware).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F

from galhpc.kernels import backend as _backend

# Direct convolution is used up to this many PSF taps (h * w): on CPU it beats the FFT up to
# about 15 x 15 PSFs on 128 x 128 images (benchmarks/kernels.py, crossover section).
DIRECT_MAX_TAPS = 15 * 15
# CPU images per chunk: 2^20 pixels of the full linear convolution (H + h - 1) x (W + w - 1)
# per chunk, tuned by timing (the FFT buffers then stay in cache: a 4,096-image batch in one
# go is memory-bound and ~2x slower; 2^18 and 2^22 are slower too).  cuda batches go in one
# piece, assuming fewer and larger kernel launches win there (not timed on a GPU yet).
CHUNK_PIXELS = 1 << 20
_SPECTRUM_CACHE_SIZE = 8
_spectrum_cache: OrderedDict[tuple, tuple[weakref.ref, int, torch.Tensor]] = OrderedDict()
PSF_BACKENDS = ("torch",)


def convolve_psf(images, psf, *, backend: str = "auto"):
    """Convolve a batch of images with a PSF: zero-padded (no wrap-around), differentiable.

    Parameters
    ----------
    images : numpy.ndarray or torch.Tensor
        (B, H, W) or (B, C, H, W), floating point, in any flux unit.
    psf : numpy.ndarray or torch.Tensor
        One PSF (h, w) for every image, or one per object (B, h, w), sampled on the
        images' pixel grid (normalise it to unit sum to conserve flux); moved to the
        images' device and dtype.
    backend : {"auto", "torch"}, optional
        "torch": direct convolution for small PSFs, FFT (cuFFT on CUDA tensors)
        otherwise, in memory-bounded chunks on CPU.  The environment variable
        GALHPC_KERNEL_BACKEND overrides "auto".

    Returns
    -------
    numpy.ndarray or torch.Tensor
        The images' shape, dtype and type (numpy in, numpy out), aligned as
        ``scipy.signal.fftconvolve(image, psf, mode="same")``; gradients flow to
        images and PSF.

    Raises
    ------
    TypeError
        If images is neither a numpy array nor a torch tensor, or not floating point.
    ValueError
        For shapes other than the above, empty inputs, or a per-object PSF count other
        than B.

    References
    ----------
    .. [1] Lanusse, F., Mandelbaum, R., Ravanbakhsh, S., et al. (2021), "Deep generative
       models for galaxy image simulations", MNRAS 504, 5543 (the PSF applied to a
       generative model's output inside its likelihood).
    """
    as_numpy = isinstance(images, np.ndarray)
    images_t = torch.from_numpy(images) if as_numpy else images
    psf_t = torch.as_tensor(psf) if not isinstance(psf, torch.Tensor) else psf
    _check_inputs(images_t, psf_t)
    psf_t = psf_t.to(device=images_t.device, dtype=images_t.dtype)
    _choose_backend(backend, images_t.device)
    h, w = psf_t.shape[-2:]
    method = direct_convolve if h * w <= DIRECT_MAX_TAPS else fft_convolve
    out = _in_chunks(method, images_t, psf_t)
    return out.numpy() if as_numpy else out


def _in_chunks(method, images: torch.Tensor, psf: torch.Tensor) -> torch.Tensor:
    """Method over CPU chunks of about CHUNK_PIXELS full-convolution pixels.

    Per-object PSFs are sliced along with the images.
    """
    if images.device.type != "cpu":
        return method(images, psf)
    b, hh, ww = images.shape[0], images.shape[-2], images.shape[-1]
    channels = images.shape[1] if images.dim() == 4 else 1
    h, w = psf.shape[-2:]
    rows = max(1, CHUNK_PIXELS // (channels * (hh + h - 1) * (ww + w - 1)))
    if b <= rows:
        return method(images, psf)
    return torch.cat(
        [method(images[s : s + rows], psf if psf.dim() == 2 else psf[s : s + rows]) for s in range(0, b, rows)]
    )


def _check_inputs(images: torch.Tensor, psf: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"convolve_psf: images must be a torch tensor or numpy array, got {type(images).__name__}")
    if images.dim() not in (3, 4):
        raise ValueError(f"convolve_psf: images must be (B, H, W) or (B, C, H, W), got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"convolve_psf: images must be floating point, got {images.dtype}")
    if psf.dim() not in (2, 3):
        raise ValueError(f"convolve_psf: psf must be (h, w) or per object (B, h, w), got shape {tuple(psf.shape)}")
    if psf.dim() == 3 and psf.shape[0] != images.shape[0]:
        raise ValueError(
            f"convolve_psf: per-object psf has {psf.shape[0]} PSFs for a batch of {images.shape[0]} images"
        )
    if min(images.shape) == 0 or min(psf.shape) == 0:
        raise ValueError(
            f"convolve_psf: empty input (images {tuple(images.shape)}, psf {tuple(psf.shape)})"
        )


def _choose_backend(backend: str, device: torch.device) -> str:
    name = _backend.requested_backend(backend)
    if name == "auto":
        return "torch"
    _backend.check_backend_fits(name, device, PSF_BACKENDS, "convolve_psf")
    return name


def _same_offsets(h: int, w: int) -> tuple[int, int]:
    """Start of the 'same' window inside the full convolution, as scipy computes it."""
    return (h - 1) // 2, (w - 1) // 2


def direct_convolve(images: torch.Tensor, psf: torch.Tensor) -> torch.Tensor:
    """Zero-padded 'same' convolution by conv2d (cross-correlation with the flipped PSF).

    Parameters
    ----------
    images : torch.Tensor
        (B, H, W) or (B, C, H, W) floating point, any flux unit.
    psf : torch.Tensor
        (h, w) shared PSF or (B, h, w) one per image, on the images' device and dtype.

    Returns
    -------
    torch.Tensor
        The images' shape and dtype, aligned like ``scipy.signal.fftconvolve(mode="same")``.
    """
    four_d = images.dim() == 4
    x = images if four_d else images.unsqueeze(1)
    b, c, hh, ww = x.shape
    h, w = psf.shape[-2:]
    sh, sw = _same_offsets(h, w)
    x = F.pad(x, (w - 1 - sw, sw, h - 1 - sh, sh))
    kernel = psf.flip(-1, -2)
    # Depthwise (grouped) conv even for one shared PSF: oneDNN runs it several times faster
    # than a single-channel conv over a batch of B * C images.
    weight = kernel.expand(b * c, 1, h, w) if psf.dim() == 2 else kernel.repeat_interleave(c, dim=0).unsqueeze(1)
    out = F.conv2d(x.reshape(1, b * c, hh + h - 1, ww + w - 1), weight, groups=b * c)
    out = out.reshape(b, c, hh, ww)
    return out if four_d else out.squeeze(1)


def fast_length(n: int) -> int:
    """Smallest 7-smooth integer >= n (sizes MKL, pocketfft and cuFFT transform fastest).

    Parameters
    ----------
    n : int
        Minimum transform length (values below 1 are taken as 1).

    Returns
    -------
    int
        The smallest m >= max(1, n) whose only prime factors are 2, 3, 5 and 7.
    """
    m = max(1, n)
    while True:
        k = m
        for p in (2, 3, 5, 7):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def same_fft_length(n_image: int, n_psf: int) -> int:
    """Shortest circular length whose 'same' window is free of wrap-around.

    Full-convolution index i + k aliases onto i + k - L.  The window [s, s + n_image) with
    s = (n_psf - 1) // 2 stays clean when L >= n_image + n_psf - 1 - s, i.e. n_image +
    n_psf // 2 (and L >= n_psf to hold the PSF): 192 instead of the full 255 for a
    128-pixel PSF on a 128-pixel image, 140 instead of 152 for a 25-pixel PSF.

    Parameters
    ----------
    n_image : int
        Image length along the axis, in pixels.
    n_psf : int
        PSF length along the same axis, in pixels.

    Returns
    -------
    int
        The transform length, rounded up by `fast_length`.
    """
    return fast_length(max(n_image + n_psf - 1 - _same_offsets(n_psf, n_psf)[0], n_psf))


def fft_convolve(images: torch.Tensor, psf: torch.Tensor) -> torch.Tensor:
    """Zero-padded 'same' convolution by real FFTs of the shortest wrap-around-free length.

    The 2-D transform is done one axis at a time so that the zero-padding rows are never
    transformed along the last axis, forward or back, and only the H output rows are
    inverse-transformed.

    Parameters
    ----------
    images, psf : torch.Tensor
        As for `direct_convolve`: (B, H, W) or (B, C, H, W) floating-point images, and an
        (h, w) shared PSF or (B, h, w) one per image on their device and dtype.

    Returns
    -------
    torch.Tensor
        What `direct_convolve` gives, to float rounding: the images' shape and dtype, aligned
        like ``scipy.signal.fftconvolve(mode="same")``.
    """
    four_d = images.dim() == 4
    x = images if four_d else images.unsqueeze(1)
    hh, ww = x.shape[-2:]
    h, w = psf.shape[-2:]
    shape = (same_fft_length(hh, h), same_fft_length(ww, w))
    psf_spectra = _psf_spectrum(psf, shape)
    psf_spectra = psf_spectra.unsqueeze(1) if psf.dim() == 3 else psf_spectra[None, None]
    sh, sw = _same_offsets(h, w)
    rows = torch.fft.rfft(x, n=shape[1], dim=-1)
    spectrum = torch.fft.fft(rows, n=shape[0], dim=-2) * psf_spectra
    rows = torch.fft.ifft(spectrum, dim=-2)[..., sh : sh + hh, :]
    out = torch.fft.irfft(rows, n=shape[1], dim=-1)[..., sw : sw + ww]
    return out if four_d else out.squeeze(1)


def _psf_spectrum(psf: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """rfft2 of the PSF, cached per (tensor, version, FFT shape) for a shared (h, w) PSF.

    Not cached when autograd needs it, nor for per-object PSFs (they change with every batch).
    """
    if psf.dim() != 2 or (psf.requires_grad and torch.is_grad_enabled()):
        return torch.fft.rfft2(psf, s=shape)
    key = (id(psf), shape, psf.dtype, psf.device)
    hit = _spectrum_cache.get(key)
    if hit is not None and hit[0]() is psf and hit[1] == psf._version:
        _spectrum_cache.move_to_end(key)
        return hit[2]
    spectrum = torch.fft.rfft2(psf.detach(), s=shape)
    _spectrum_cache[key] = (weakref.ref(psf), psf._version, spectrum)
    while len(_spectrum_cache) > _SPECTRUM_CACHE_SIZE:
        _spectrum_cache.popitem(last=False)
    return spectrum
