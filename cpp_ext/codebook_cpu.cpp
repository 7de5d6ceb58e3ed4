// Fused distance + argmin: each OpenMP thread takes tiles of kRows rows and sweeps the whole
// codebook in register-sized panels of kLanes codes, keeping a running minimum per lane.
// The score minimised is ||c||^2 / 2 - x.c (same argmin as ||x - c||^2).  The tile kernel is
// compiled for AVX-512, AVX2+FMA and baseline x86-64, picked at load time (target_clones).
#include "codebook_cpu.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

namespace galhpc {
namespace {

constexpr int kRows = 4;

template <typename T>
constexpr int lanes() { return 128 / static_cast<int>(sizeof(T)); }  // two 512-bit vectors

// Codebook transposed to (d, kp) with kp a multiple of the panel width; padded codes get an
// infinite score so they never win.
template <typename T>
struct PreparedCodebook {
  int64_t kp;
  std::vector<T> transposed;
  std::vector<T> half_norm;
};

template <typename T>
PreparedCodebook<T> prepare(const T* codebook, int64_t k, int64_t d) {
  const int64_t kp = (k + lanes<T>() - 1) / lanes<T>() * lanes<T>();
  PreparedCodebook<T> p{kp, std::vector<T>(static_cast<size_t>(d * kp), T(0)),
                        std::vector<T>(static_cast<size_t>(kp), std::numeric_limits<T>::infinity())};
  for (int64_t c = 0; c < k; ++c) {
    T norm = 0;
    for (int64_t j = 0; j < d; ++j) {
      const T v = codebook[c * d + j];
      p.transposed[j * kp + c] = v;
      norm += v * v;
    }
    p.half_norm[c] = norm / 2;
  }
  return p;
}

template <typename T>
inline __attribute__((always_inline)) void tile_argmin(const T* x, int64_t d, const T* ct, const T* half_norm,
                                                       int64_t kp, int64_t* index) {
  constexpr int L = lanes<T>();
  T best[kRows][L];
  int32_t best_index[kRows][L];
  for (int r = 0; r < kRows; ++r)
    for (int j = 0; j < L; ++j) {
      best[r][j] = std::numeric_limits<T>::infinity();
      best_index[r][j] = j;
    }
  for (int64_t k0 = 0; k0 < kp; k0 += L) {
    T acc[kRows][L] = {};
    for (int64_t j = 0; j < d; ++j) {
      const T* c = ct + j * kp + k0;
      for (int r = 0; r < kRows; ++r) {
        const T xv = x[r * d + j];
#pragma omp simd
        for (int l = 0; l < L; ++l) acc[r][l] += xv * c[l];
      }
    }
    for (int r = 0; r < kRows; ++r) {
#pragma omp simd
      for (int l = 0; l < L; ++l) {
        const T score = half_norm[k0 + l] - acc[r][l];
        const bool better = score < best[r][l];  // strict: earlier (lower) codes keep ties
        best[r][l] = better ? score : best[r][l];
        best_index[r][l] = better ? static_cast<int32_t>(k0 + l) : best_index[r][l];
      }
    }
  }
  for (int r = 0; r < kRows; ++r) {
    T value = best[r][0];
    int32_t at = best_index[r][0];
    for (int l = 1; l < L; ++l) {
      if (best[r][l] < value || (best[r][l] == value && best_index[r][l] < at)) {
        value = best[r][l];
        at = best_index[r][l];
      }
    }
    index[r] = at;
  }
}

#define GALHPC_CLONES __attribute__((target_clones("arch=skylake-avx512", "arch=haswell", "default")))

GALHPC_CLONES void tile_argmin_f32(const float* x, int64_t d, const float* ct, const float* hn, int64_t kp,
                                   int64_t* index) {
  tile_argmin<float>(x, d, ct, hn, kp, index);
}

GALHPC_CLONES void tile_argmin_f64(const double* x, int64_t d, const double* ct, const double* hn, int64_t kp,
                                   int64_t* index) {
  tile_argmin<double>(x, d, ct, hn, kp, index);
}

inline void tile_argmin_any(const float* x, int64_t d, const float* ct, const float* hn, int64_t kp, int64_t* i) {
  tile_argmin_f32(x, d, ct, hn, kp, i);
}
inline void tile_argmin_any(const double* x, int64_t d, const double* ct, const double* hn, int64_t kp, int64_t* i) {
  tile_argmin_f64(x, d, ct, hn, kp, i);
}

template <typename T>
void search(const T* x, int64_t n, int64_t d, const T* codebook, int64_t k, int64_t* index) {
  const PreparedCodebook<T> p = prepare(codebook, k, d);
  const int64_t full_tiles = n / kRows;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < full_tiles; ++t)
    tile_argmin_any(x + t * kRows * d, d, p.transposed.data(), p.half_norm.data(), p.kp, index + t * kRows);
  const int64_t rest = n - full_tiles * kRows;
  if (rest > 0) {  // last rows, zero-padded to a whole tile
    std::vector<T> tail(static_cast<size_t>(kRows * d), T(0));
    std::memcpy(tail.data(), x + full_tiles * kRows * d, static_cast<size_t>(rest * d) * sizeof(T));
    int64_t tail_index[kRows];
    tile_argmin_any(tail.data(), d, p.transposed.data(), p.half_norm.data(), p.kp, tail_index);
    std::copy(tail_index, tail_index + rest, index + full_tiles * kRows);
  }
}

}  // namespace

void nearest_code_cpu(const float* x, int64_t n, int64_t d, const float* codebook, int64_t k, int64_t* index) {
  search(x, n, d, codebook, k, index);
}

void nearest_code_cpu(const double* x, int64_t n, int64_t d, const double* codebook, int64_t k, int64_t* index) {
  search(x, n, d, codebook, k, index);
}

}  // namespace galhpc
