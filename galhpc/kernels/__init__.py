"""Hot kernels, one public function each, with a plain-torch reference and compiled backends.

convolve_psf: batched, zero-padded, differentiable PSF convolution.
nearest_code: blocked codebook nearest-neighbour lookup (no N x K matrix in memory).
Backends are chosen automatically (see galhpc.kernels.backend); set GALHPC_KERNEL_BACKEND
or pass backend= to override.
"""

from galhpc.kernels.codebook import nearest_code
from galhpc.kernels.psf import convolve_psf

__all__ = ["convolve_psf", "nearest_code"]
