"""numba backends of nearest_code: a parallel CPU kernel and a numba.cuda kernel.

Both minimise ||c||^2 / 2 - x.c over the codes (the argmin of ||x - c||^2), keep ties on the
lowest index, and never hold more than a tile of rows x K scores.  numba is imported here
only, when the "numba" backend is first asked for.

The CPU kernels are cached on disk (numba ``cache=True``) where numba finds a writable
place: beside this file, ``$NUMBA_CACHE_DIR``, or the user's cache folder.  A read-only
install (a container, a shared software stack) with an unwritable ``$HOME`` has none:
there they are compiled in each process instead, with a debug line.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numba import cuda  # a module global, which the CUDA simulator swaps for its own

ROWS_PER_TILE = 8  # rows x padded K scores per tile stay in L1 (8 x 512 float32 = 16 KiB)
CUDA_THREADS = 128

log = logging.getLogger("galhpc.kernels.numba_codebook")


def _njit(**options: Any) -> Callable[[Callable[..., Any]], Any]:
    """``numba.njit(cache=True, **options)``, or without the disk cache where numba cannot write one.

    numba raises "cannot cache function ...: no locator available" where it has no writable
    place for the cache; the function is then compiled in each process.
    """

    def decorate(function: Callable[..., Any]) -> Any:
        try:
            return numba.njit(cache=True, **options)(function)
        except RuntimeError as err:
            if "no locator available" not in str(err):
                raise
            log.debug("numba cannot cache %s (no writable cache folder: %s); compiling it in each process",
                      function.__name__, err)
            return numba.njit(cache=False, **options)(function)

    return decorate


def nearest_code_cpu(x: np.ndarray, codebook: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest code of every row of x on the CPU, by the parallel numba kernel.

    Parameters
    ----------
    x : numpy.ndarray
        (N, D) float32 or float64 vectors.
    codebook : numpy.ndarray
        (K, D) code vectors, in x's dtype.

    Returns
    -------
    index : numpy.ndarray
        (N,) int64 nearest code row (ties to the lowest index).
    squared_distance : numpy.ndarray
        (N,) in x's dtype, ||x_i - codebook[index_i]||^2 summed exactly from the chosen code.
    """
    codebook = np.ascontiguousarray(codebook)
    half_norm = 0.5 * np.einsum("kd,kd->k", codebook, codebook)
    index = np.empty(x.shape[0], dtype=np.int64)
    distance = np.empty(x.shape[0], dtype=x.dtype)
    _search_cpu(np.ascontiguousarray(x), codebook, np.ascontiguousarray(codebook.T), half_norm.astype(x.dtype),
                index, distance)
    return index, distance


@_njit()
def _exact_distance(x, row, codebook, code):
    total = x[row, 0] - x[row, 0]  # zero in x's dtype
    for j in range(x.shape[1]):
        diff = x[row, j] - codebook[code, j]
        total += diff * diff
    return total


@_njit(parallel=True)
def _search_cpu(x, codebook, transposed, half_norm, index, distance):
    n, d = x.shape
    k = transposed.shape[1]
    for tile in numba.prange((n + ROWS_PER_TILE - 1) // ROWS_PER_TILE):
        r0 = tile * ROWS_PER_TILE
        rows = min(ROWS_PER_TILE, n - r0)
        dots = np.zeros((ROWS_PER_TILE, k), dtype=x.dtype)
        for j in range(d):
            for r in range(rows):
                xv = x[r0 + r, j]
                for c in range(k):  # contiguous in c: vectorises
                    dots[r, c] += xv * transposed[j, c]
        for r in range(rows):
            best = half_norm[0] - dots[r, 0]
            at = 0
            for c in range(1, k):
                score = half_norm[c] - dots[r, c]
                if score < best:  # strict: the lowest index keeps a tie
                    best = score
                    at = c
            index[r0 + r] = at
            distance[r0 + r] = _exact_distance(x, r0 + r, codebook, at)


@functools.cache
def _cuda_kernel(dtype: np.dtype):
    """The numba.cuda kernel for one float dtype (accumulating in that dtype)."""
    zero = np.dtype(dtype).type(0)

    @cuda.jit
    def search(x, codebook, half_norm, index, distance):
        row = cuda.grid(1)
        if row >= x.shape[0]:
            return
        best = zero
        at = -1
        for c in range(codebook.shape[0]):
            dot = zero
            for j in range(x.shape[1]):
                dot += x[row, j] * codebook[c, j]
            score = half_norm[c] - dot
            if at < 0 or score < best:
                best = score
                at = c
        total = zero
        for j in range(x.shape[1]):
            diff = x[row, j] - codebook[at, j]
            total += diff * diff
        index[row] = at
        distance[row] = total

    return search


def search_cuda_arrays(x, codebook, half_norm, index, distance, stream=0) -> None:
    """Launch the numba.cuda nearest-code kernel on device arrays, one thread per row of x.

    Parameters
    ----------
    x : numba device array or __cuda_array_interface__ object
        (N, D) float vectors on the GPU.
    codebook : numba device array or __cuda_array_interface__ object
        (K, D) code vectors, in x's dtype.
    half_norm : numba device array or __cuda_array_interface__ object
        (K,) ||c||^2 / 2 per code, in x's dtype.
    index : numba device array or __cuda_array_interface__ object
        (N,) int64 output: nearest code row (ties to the lowest index).
    distance : numba device array or __cuda_array_interface__ object
        (N,) output in x's dtype: exact squared distance to the chosen code.
    stream : numba stream or int, optional
        The CUDA stream to launch on (0: the default stream).
    """
    n = x.shape[0]
    if n == 0:
        return
    blocks = (n + CUDA_THREADS - 1) // CUDA_THREADS
    _cuda_kernel(np.dtype(x.dtype))[blocks, CUDA_THREADS, stream](x, codebook, half_norm, index, distance)


def nearest_code_numpy_on_cuda(x: np.ndarray, codebook: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Copy host arrays to the GPU (or the CUDA simulator), search there, copy the results back.

    Parameters
    ----------
    x, codebook : numpy.ndarray
        (N, D) float32 or float64 vectors and (K, D) code vectors in x's dtype, as for
        `nearest_code_cpu`.

    Returns
    -------
    index : numpy.ndarray
        (N,) int64 nearest code row (ties to the lowest index).
    squared_distance : numpy.ndarray
        (N,) in x's dtype, exact squared distance to the chosen code.
    """
    half_norm = (0.5 * np.einsum("kd,kd->k", codebook, codebook)).astype(x.dtype)
    index = cuda.device_array(x.shape[0], dtype=np.int64)
    distance = cuda.device_array(x.shape[0], dtype=x.dtype)
    search_cuda_arrays(cuda.to_device(np.ascontiguousarray(x)), cuda.to_device(np.ascontiguousarray(codebook)),
                       cuda.to_device(half_norm), index, distance)
    return index.copy_to_host(), distance.copy_to_host()


def nearest_code_torch_cuda(x, codebook):
    """Search cuda tensors with the numba.cuda kernel on torch's current stream.

    Parameters
    ----------
    x : torch.Tensor
        (N, D) contiguous float32 or float64 cuda tensor.
    codebook : torch.Tensor
        (K, D) contiguous cuda tensor in x's dtype, on x's device.

    Returns
    -------
    index : torch.Tensor
        (N,) int64 cuda tensor, nearest code row (ties to the lowest index).
    squared_distance : torch.Tensor
        (N,) cuda tensor in x's dtype, exact squared distance to the chosen code.
    """
    import torch

    half_norm = codebook.pow(2).sum(dim=1).mul_(0.5).contiguous()
    index = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    distance = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    stream = cuda.external_stream(torch.cuda.current_stream(x.device).cuda_stream)
    search_cuda_arrays(cuda.as_cuda_array(x), cuda.as_cuda_array(codebook), cuda.as_cuda_array(half_norm),
                       cuda.as_cuda_array(index), cuda.as_cuda_array(distance), stream)
    return index, distance
