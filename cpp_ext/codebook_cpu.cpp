// Fused distance + argmin: each OpenMP thread takes tiles of kRows rows and sweeps the whole
// codebook in register-sized panels of lanes<T>() codes, keeping a running minimum per lane.
// The score minimised is ||c||^2 / 2 - x.c (same argmin as ||x - c||^2).  The tile kernel is
// compiled for AVX-512, AVX2+FMA and baseline x86-64 and picked at run time.
#include "codebook_cpu.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

namespace galhpc {
namespace {

constexpr int kRows = 8;

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

// One copy of the tile kernel per instruction set, chosen once from the CPU's features (not
// its model, so AMD and Intel CPUs with the same features get the same code).
#define GALHPC_TILE_VARIANTS(T, suffix)                                                                       \
  __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,fma"))) void tile_avx512_##suffix(                \
      const T* x, int64_t d, const T* ct, const T* hn, int64_t kp, int64_t* index) {                         \
    tile_argmin<T>(x, d, ct, hn, kp, index);                                                                 \
  }                                                                                                          \
  __attribute__((target("avx2,fma"))) void tile_avx2_##suffix(const T* x, int64_t d, const T* ct, const T* hn, \
                                                              int64_t kp, int64_t* index) {                  \
    tile_argmin<T>(x, d, ct, hn, kp, index);                                                                 \
  }                                                                                                          \
  void tile_baseline_##suffix(const T* x, int64_t d, const T* ct, const T* hn, int64_t kp, int64_t* index) {   \
    tile_argmin<T>(x, d, ct, hn, kp, index);                                                                 \
  }

GALHPC_TILE_VARIANTS(float, f32)
GALHPC_TILE_VARIANTS(double, f64)

template <typename T>
using TileFn = void (*)(const T*, int64_t, const T*, const T*, int64_t, int64_t*);

enum class Isa { kAvx512, kAvx2, kBaseline };

Isa best_isa() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq"))
    return Isa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
  return Isa::kBaseline;
}

TileFn<float> tile_kernel(const float*) {
  static const TileFn<float> fn = best_isa() == Isa::kAvx512 ? tile_avx512_f32
                                  : best_isa() == Isa::kAvx2 ? tile_avx2_f32
                                                             : tile_baseline_f32;
  return fn;
}

TileFn<double> tile_kernel(const double*) {
  static const TileFn<double> fn = best_isa() == Isa::kAvx512 ? tile_avx512_f64
                                   : best_isa() == Isa::kAvx2 ? tile_avx2_f64
                                                              : tile_baseline_f64;
  return fn;
}

template <typename T>
void exact_distances(const T* x, int64_t rows, int64_t d, const T* codebook, const int64_t* index, T* distance) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* code = codebook + index[r] * d;
    T sum = 0;
    for (int64_t j = 0; j < d; ++j) {
      const T diff = x[r * d + j] - code[j];
      sum += diff * diff;
    }
    distance[r] = sum;
  }
}

template <typename T>
void search(const T* x, int64_t n, int64_t d, const T* codebook, int64_t k, int64_t* index, T* distance,
            int threads) {
  const PreparedCodebook<T> p = prepare(codebook, k, d);
  const TileFn<T> tile_argmin_any = tile_kernel(x);
  const int64_t full_tiles = n / kRows;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t t = 0; t < full_tiles; ++t) {
    tile_argmin_any(x + t * kRows * d, d, p.transposed.data(), p.half_norm.data(), p.kp, index + t * kRows);
    exact_distances(x + t * kRows * d, kRows, d, codebook, index + t * kRows, distance + t * kRows);
  }
  const int64_t done = full_tiles * kRows;
  if (n > done) {  // last rows, zero-padded to a whole tile
    std::vector<T> tail(static_cast<size_t>(kRows * d), T(0));
    std::memcpy(tail.data(), x + done * d, static_cast<size_t>((n - done) * d) * sizeof(T));
    int64_t tail_index[kRows];
    tile_argmin_any(tail.data(), d, p.transposed.data(), p.half_norm.data(), p.kp, tail_index);
    std::copy(tail_index, tail_index + (n - done), index + done);
    exact_distances(x + done * d, n - done, d, codebook, index + done, distance + done);
  }
}

}  // namespace

void nearest_code_cpu(const float* x, int64_t n, int64_t d, const float* codebook, int64_t k, int64_t* index,
                      float* distance, int threads) {
  search(x, n, d, codebook, k, index, distance, std::max(1, threads));
}

void nearest_code_cpu(const double* x, int64_t n, int64_t d, const double* codebook, int64_t k, int64_t* index,
                      double* distance, int threads) {
  search(x, n, d, codebook, k, index, distance, std::max(1, threads));
}

}  // namespace galhpc
