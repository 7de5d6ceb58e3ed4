"""Nearest codebook entry (or the k nearest) for each row of x, searched in blocks of rows.

Memory stays O(block_size x K): the N x K distance matrix never exists.  This is the
quantisation step of a VQ-VAE (van den Oord et al. 2017).

With `k` given (the top-k search of galhpc.search), the k nearest codes come sorted by
exact squared distance, ties by the lower code index.  The expansion is used only to pick
candidates: every code whose expanded score lies within twice the expansion's rounding
bound of the k-th best is re-scored exactly, in float64 (differences summed over features
in a fixed order, so a pair's distance does not depend on the block it was found in),
which makes the result equal to a brute-force search whatever the blocking; the scan
itself runs in x's dtype (float32 data scan at float32 speed).

Ties go to the lowest code index, like torch.argmin.  The compiled and numba backends
fuse distance and argmin and hold only a tile of rows x K scores per thread, whatever
block_size is.  The returned squared distance is summed exactly from the chosen code (not
from the ||x||^2 - 2 x.c + ||c||^2 expansion used to search); when x or the codebook
requires grad it is recomputed in torch, block by block, so that it is differentiable.
"""

from __future__ import annotations

import torch

from galhpc.kernels import backend as _backend

CODEBOOK_BACKENDS = ("torch", "cpp", "cuda", "numba")
# Distance-block elements (block_size * K) when block_size is not given: 4 MiB of float32.
DEFAULT_BLOCK_ELEMENTS = 1 << 20


def nearest_code(x: torch.Tensor, codebook: torch.Tensor, *, block_size: int | None = None, backend: str = "auto",
                 k: int | None = None):
    """The nearest codebook row of every vector, or its `k` nearest rows, searched in blocks.

    No N x K distance matrix is held in memory.

    Parameters
    ----------
    x : torch.Tensor
        (N, D) floating-point vectors (e.g. VQ-VAE encoder outputs, one per latent pixel).
    codebook : torch.Tensor
        (K, D) code vectors; moved to x's device and dtype.
    block_size : int, optional
        Rows of x per block (default: about DEFAULT_BLOCK_ELEMENTS / K).
    backend : {"auto", "torch", "cpp", "cuda", "numba"}, optional
        Implementation; "auto" picks the compiled extension, numba or torch
        (GALHPC_KERNEL_BACKEND overrides it).  Every backend matches the torch reference.
        With `k` only "torch" (any device) is implemented; "auto" picks it.
    k : int, optional
        Return the k nearest codes (sorted by distance, ties by lower index) instead of the
        nearest one.

    Returns
    -------
    index : torch.Tensor
        (N,) int64, the row of `codebook` nearest to each row of x (Euclidean); with `k`,
        (N, min(k, K)), nearest first.
    squared_distance : torch.Tensor
        (N,) of x's dtype, ||x_i - codebook[index_i]||^2; differentiable with respect to
        x and codebook when gradients are enabled.  With `k`: (N, min(k, K)) float64,
        summed exactly from the float inputs, not differentiable.

    Raises
    ------
    TypeError
        If x or codebook is not a floating-point torch tensor.
    ValueError
        For shapes other than (N, D) and (K, D), an empty codebook, a non-positive
        block size or k, or a backend other than torch with `k`.

    References
    ----------
    .. [1] van den Oord, A., Vinyals, O., & Kavukcuoglu, K. (2017), "Neural discrete
       representation learning", NeurIPS 30 (the VQ-VAE quantisation step).
    """
    _check_inputs(x, codebook, block_size)
    if k is not None:
        return _nearest_k(x, codebook, k, block_size, backend)
    codebook = codebook.to(device=x.device, dtype=x.dtype)
    block = block_size or default_block_size(codebook.shape[0])
    name = _choose_backend(backend, x.device, x.shape[1] * x.element_size())
    with torch.no_grad():
        index, squared_distance = _SEARCH[name](x.detach().contiguous(), codebook.detach().contiguous(), block)
    if torch.is_grad_enabled() and (x.requires_grad or codebook.requires_grad):
        squared_distance = exact_squared_distance(x, codebook, index, block)
    return index, squared_distance


def _nearest_k(x: torch.Tensor, codebook: torch.Tensor, k: int, block_size: int | None,
               backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"nearest_code: k must be a positive integer, got {k!r}")
    name = _backend.requested_backend(backend)
    if name not in ("auto", "torch"):
        raise ValueError(f"nearest_code: the k-nearest search runs on the torch backend only, got {name!r}")
    codebook = codebook.to(device=x.device, dtype=x.dtype)
    block = block_size or default_block_size(codebook.shape[0])
    with torch.no_grad():
        return torch_search_k(x.detach().contiguous(), codebook.detach().contiguous(), k, block)


def torch_search_k(x: torch.Tensor, codebook: torch.Tensor, k: int,
                   block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest codes of every row of x, sorted by exact squared distance, ties by index.

    Candidates are picked by the ||c||^2 - 2 x.c expansion in x's dtype; every code within
    twice its rounding bound of the k-th best is re-scored exactly in float64, so the result
    equals a brute-force search whatever the blocking.

    Parameters
    ----------
    x : torch.Tensor
        (N, D) floating-point vectors, contiguous, without grad.
    codebook : torch.Tensor
        (K, D) code vectors on x's device, in x's dtype.
    k : int
        Codes per row wanted (positive); min(k, K) are returned.
    block_size : int
        Rows of x scored per block (positive).

    Returns
    -------
    index : torch.Tensor
        (N, min(k, K)) int64 code rows, nearest first.
    squared_distance : torch.Tensor
        (N, min(k, K)) float64 exact ||x_i - codebook[index]||^2, summed over features in order.
    """
    kk = min(k, codebook.shape[0])
    code_norms = codebook.pow(2).sum(dim=1)
    # |fl(score) - score| <= (D + 2) eps (|x|^2 + |c|^2) for score = |c|^2 - 2 x.c (doubled for safety)
    slack = 2.0 * (x.shape[1] + 2) * torch.finfo(x.dtype).eps
    index = torch.empty(x.shape[0], kk, dtype=torch.int64, device=x.device)
    distance = torch.empty(x.shape[0], kk, dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], block_size):
        block = x[start : start + block_size]
        scores = torch.addmm(code_norms, block, codebook.t(), beta=1.0, alpha=-2.0)
        rows, codes = _candidates(scores, kk, slack * (block.pow(2).sum(dim=1) + code_norms.max()))
        exact = _pair_squared_distance(block, codebook, rows, codes)
        order = torch.sort(codes, stable=True).indices
        order = order[torch.sort(exact[order], stable=True).indices]
        order = order[torch.sort(rows[order], stable=True).indices]  # by row, then distance, then code
        rows, codes, exact = rows[order], codes[order], exact[order]
        first = torch.searchsorted(rows, torch.arange(block.shape[0], device=x.device))
        rank = torch.arange(rows.shape[0], device=x.device) - first[rows]
        keep = rank < kk  # every row has at least kk candidates: its own top-kk
        index[start : start + block.shape[0]] = codes[keep].view(-1, kk)
        distance[start : start + block.shape[0]] = exact[keep].view(-1, kk)
    return index, distance


def _candidates(scores: torch.Tensor, kk: int, bound: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, code) pairs whose score is within 2 `bound` (per row) of the row's kk-th best.

    These are taken from the 2 kk best scores per row, and for the rare rows where all of
    those are in the window (many near-ties) from every code of the row.
    """
    n_codes = scores.shape[1]
    width = min(n_codes, 2 * kk)
    values, codes = scores.topk(width, dim=1, largest=False, sorted=True)
    limit = values[:, kk - 1] + 2.0 * bound
    inside = values <= limit[:, None]
    crowded = inside[:, -1].clone() if width < n_codes else torch.zeros_like(inside[:, -1])
    inside[crowded] = False
    rows, slot = inside.nonzero(as_tuple=True)
    codes = codes[rows, slot]
    if crowded.any():
        many = crowded.nonzero()[:, 0]
        more_rows, more_codes = (scores[many] <= limit[many, None]).nonzero(as_tuple=True)
        rows, codes = torch.cat([rows, many[more_rows]]), torch.cat([codes, more_codes])
    return rows, codes


def _pair_squared_distance(x: torch.Tensor, codebook: torch.Tensor, rows: torch.Tensor,
                           codes: torch.Tensor) -> torch.Tensor:
    """sum_d (x[rows, d] - codebook[codes, d])^2 in float64, summed over d in order.

    The fixed order gives the same bits for a pair whatever else is computed with it.
    """
    total = torch.zeros(rows.shape[0], dtype=torch.float64, device=x.device)
    for d in range(x.shape[1]):
        total += (x[rows, d].double() - codebook[codes, d].double()).pow(2)
    return total


def exact_squared_distance(x: torch.Tensor, codebook: torch.Tensor, index: torch.Tensor, block: int) -> torch.Tensor:
    """||x_i - codebook[index_i]||^2 block by block (O(block x D) temporaries), differentiable.

    Parameters
    ----------
    x : torch.Tensor
        (N, D) floating-point vectors.
    codebook : torch.Tensor
        (K, D) code vectors on x's device, in x's dtype.
    index : torch.Tensor
        (N,) int64 code row chosen for each row of x.
    block : int
        Rows of x per block (positive).

    Returns
    -------
    torch.Tensor
        (N,) in x's dtype; gradients flow to x and codebook.
    """
    parts = [
        (x[start : start + block] - codebook[index[start : start + block]]).pow(2).sum(dim=1)
        for start in range(0, x.shape[0], block)
    ]
    return torch.cat(parts) if parts else x.new_zeros(0)


def default_block_size(k: int) -> int:
    """Rows per block so that a block of scores holds about DEFAULT_BLOCK_ELEMENTS entries.

    Parameters
    ----------
    k : int
        Number of codes K (columns of a score block).

    Returns
    -------
    int
        DEFAULT_BLOCK_ELEMENTS // K, at least 1.
    """
    return max(1, DEFAULT_BLOCK_ELEMENTS // max(1, k))


def _check_inputs(x: torch.Tensor, codebook: torch.Tensor, block_size: int | None) -> None:
    for name, t in (("x", x), ("codebook", codebook)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"nearest_code: {name} must be a torch tensor, got {type(t).__name__}")
        if t.dim() != 2:
            raise ValueError(f"nearest_code: {name} must be 2-D, got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"nearest_code: {name} must be floating point, got {t.dtype}")
    if x.shape[1] != codebook.shape[1]:
        raise ValueError(
            f"nearest_code: x has {x.shape[1]} features but the codebook has {codebook.shape[1]}"
        )
    if codebook.shape[0] == 0:
        raise ValueError("nearest_code: the codebook is empty")
    if block_size is not None and (not isinstance(block_size, int) or block_size < 1):
        raise ValueError(f"nearest_code: block_size must be a positive integer, got {block_size!r}")


# The CUDA kernel stages 32 codes of row_bytes each in 48 KiB of shared memory.
CUDA_MAX_ROW_BYTES = 48 * 1024 // 32


def _choose_backend(backend: str, device: torch.device, row_bytes: int) -> str:
    name = _backend.requested_backend(backend)
    if name == "auto":  # the winners of benchmarks/kernels.py (docs/benchmarks.md)
        if device.type == "cuda":
            fits = row_bytes <= CUDA_MAX_ROW_BYTES
            return "cuda" if fits and _backend.extension_has_cuda() else "torch"
        if device.type == "cpu" and _backend.extension_available():
            return "cpp"
        return "numba" if device.type == "cpu" and _backend.numba_available() else "torch"
    _backend.check_backend_fits(name, device, CODEBOOK_BACKENDS, "nearest_code")
    return name


def torch_search(x: torch.Tensor, codebook: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Torch reference of `nearest_code`: blocked argmin, then the exact distance to the chosen code.

    Per block of rows the argmin is taken over ||c||^2 - 2 x.c (||x||^2 does not change the
    argmin); ties go to the lowest code index, like torch.argmin.

    Parameters
    ----------
    x, codebook : torch.Tensor
        (N, D) floating-point vectors and (K, D) code vectors on x's device, in x's dtype.
    block_size : int
        Rows of x scored per block (positive).

    Returns
    -------
    index : torch.Tensor
        (N,) int64 nearest code row of each vector.
    squared_distance : torch.Tensor
        (N,) in x's dtype, ||x_i - codebook[index_i]||^2 summed exactly (see
        `exact_squared_distance`).
    """
    index = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    code_norms = codebook.pow(2).sum(dim=1)
    for start in range(0, x.shape[0], block_size):
        block = x[start : start + block_size]
        scores = torch.addmm(code_norms, block, codebook.t(), beta=1.0, alpha=-2.0)
        index[start : start + block.shape[0]] = scores.argmin(dim=1)
    return index, exact_squared_distance(x, codebook, index, block_size)


def _cpp_search(x: torch.Tensor, codebook: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    return _backend.extension().nearest_code_cpu(x, codebook, torch.get_num_threads())


def _cuda_search(x: torch.Tensor, codebook: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    return _backend.extension().nearest_code_cuda(x, codebook)


def _numba_search(x: torch.Tensor, codebook: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    import numba

    from galhpc.kernels import numba_codebook

    numba.set_num_threads(min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))  # torch's thread budget
    if x.device.type == "cuda":
        return numba_codebook.nearest_code_torch_cuda(x, codebook)
    index, distance = numba_codebook.nearest_code_cpu(x.numpy(), codebook.numpy())
    return torch.from_numpy(index), torch.from_numpy(distance)


_SEARCH = {"torch": torch_search, "cpp": _cpp_search, "cuda": _cuda_search, "numba": _numba_search}
