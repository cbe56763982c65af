// Matrix products of the recurrent kernels.
//
// Large products (all steps at once, or a big batch) go to ATen's BLAS on tensor views.
// The per-step product of a small batch is too short for a BLAS call to pay off (its
// fixed cost is about that of the whole product at B = 1, H = 64), so it runs a
// register-blocked kernel on a copy of the weight packed once per layer call.
//
// Dimension legend (row-major, c = a . b)
//   M  rows of a and c (the batch)     K  inner size     N  columns of b and c
//   L  scalars per vector register     N_pad = N rounded up to a multiple of L
#pragma once
#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace seqkern::gemm {

using at::Tensor;

// c (+)= a . b on tensor views (any row strides), through ATen's BLAS.
inline void blas(const Tensor& a, const Tensor& b, Tensor& c, bool accumulate) {
  if (c.numel() == 0) {
    return;
  }
  if (accumulate) {
    at::addmm_out(c, c, a, b);
  } else {
    at::mm_out(c, a, b);
  }
}

#if defined(__AVX512F__)
constexpr int kVectorBytes = 64;
#elif defined(__AVX__)
constexpr int kVectorBytes = 32;
#else
constexpr int kVectorBytes = 16;
#endif

template <typename scalar_t>
struct Vector {
  typedef scalar_t type __attribute__((vector_size(kVectorBytes)));
  static constexpr int64_t lanes = kVectorBytes / sizeof(scalar_t);
};

template <typename scalar_t>
int64_t padded(int64_t columns) {
  const int64_t lanes = Vector<scalar_t>::lanes;
  return (columns + lanes - 1) / lanes * lanes;
}

// One tile of c: kRows rows by kVectors vectors, accumulated over all K in registers.
template <typename scalar_t, int kRows, int kVectors>
inline void tile(int64_t K, const scalar_t* a, int64_t lda, const scalar_t* b, int64_t ldb, scalar_t* c,
                 int64_t ldc, bool accumulate) {
  using vector = typename Vector<scalar_t>::type;
  constexpr int64_t lanes = Vector<scalar_t>::lanes;
  vector sum[kRows][kVectors];
  for (int r = 0; r < kRows; ++r) {
    for (int q = 0; q < kVectors; ++q) {
      if (accumulate) {
        std::memcpy(&sum[r][q], c + r * ldc + q * lanes, sizeof(vector));
      } else {
        sum[r][q] = vector{};
      }
    }
  }
  for (int64_t k = 0; k < K; ++k) {
    vector row[kVectors];
    for (int q = 0; q < kVectors; ++q) {
      std::memcpy(&row[q], b + k * ldb + q * lanes, sizeof(vector));
    }
    for (int r = 0; r < kRows; ++r) {
      const scalar_t scale = a[r * lda + k];
      for (int q = 0; q < kVectors; ++q) {
        sum[r][q] += scale * row[q];
      }
    }
  }
  for (int r = 0; r < kRows; ++r) {
    for (int q = 0; q < kVectors; ++q) {
      std::memcpy(c + r * ldc + q * lanes, &sum[r][q], sizeof(vector));
    }
  }
}

template <typename scalar_t, int kRows>
inline void row_block(int64_t K, int64_t N_pad, const scalar_t* a, int64_t lda, const scalar_t* b, int64_t ldb,
                      scalar_t* c, int64_t ldc, bool accumulate) {
  constexpr int64_t lanes = Vector<scalar_t>::lanes;
  // A single row has no reuse of b across rows, so it takes wider tiles to keep enough
  // independent sums in flight.
  constexpr int kWide = kRows == 1 ? 8 : 4;
  int64_t n = 0;
  for (; n + kWide * lanes <= N_pad; n += kWide * lanes) {
    tile<scalar_t, kRows, kWide>(K, a, lda, b + n, ldb, c + n, ldc, accumulate);
  }
  for (; n + 2 * lanes <= N_pad; n += 2 * lanes) {
    tile<scalar_t, kRows, 2>(K, a, lda, b + n, ldb, c + n, ldc, accumulate);
  }
  for (; n < N_pad; n += lanes) {
    tile<scalar_t, kRows, 1>(K, a, lda, b + n, ldb, c + n, ldc, accumulate);
  }
}

// c (M, N_pad) (+)= a (M, K) . b (K, N_pad); b's padding columns are zero.
template <typename scalar_t>
void small(int64_t M, int64_t K, int64_t N_pad, const scalar_t* a, int64_t lda, const scalar_t* b, int64_t ldb,
           scalar_t* c, int64_t ldc, bool accumulate) {
  int64_t m = 0;
  for (; m + 4 <= M; m += 4) {
    row_block<scalar_t, 4>(K, N_pad, a + m * lda, lda, b, ldb, c + m * ldc, ldc, accumulate);
  }
  switch (M - m) {
    case 3:
      row_block<scalar_t, 3>(K, N_pad, a + m * lda, lda, b, ldb, c + m * ldc, ldc, accumulate);
      break;
    case 2:
      row_block<scalar_t, 2>(K, N_pad, a + m * lda, lda, b, ldb, c + m * ldc, ldc, accumulate);
      break;
    case 1:
      row_block<scalar_t, 1>(K, N_pad, a + m * lda, lda, b, ldb, c + m * ldc, ldc, accumulate);
      break;
    default:
      break;
  }
}

// The product c (M, N) (+)= a (M, K) . b (K, N) of every step of a time loop, b fixed.
// c is a view whose row stride is at least N_pad (a padded scratch buffer), so that the
// small kernel may write whole vectors.
template <typename scalar_t>
class StepProduct {
 public:
  StepProduct() = default;
  StepProduct(const Tensor& b, Tensor c, bool use_small) : b_(b), c_(std::move(c)), small_(use_small) {
    if (small_) {
      const int64_t K = b.size(0), N = b.size(1);
      packed_ = at::zeros({K, padded<scalar_t>(N)}, b.options());
      packed_.narrow(1, 0, N).copy_(b);
      TORCH_INTERNAL_ASSERT(c_.stride(0) >= packed_.size(1) && c_.stride(1) == 1);
    }
  }

  // a: (M, K) view with unit column stride.
  void operator()(const Tensor& a, bool accumulate) {
    if (!small_) {
      blas(a, b_, c_, accumulate);
      return;
    }
    small<scalar_t>(c_.size(0), packed_.size(0), packed_.size(1), a.data_ptr<scalar_t>(), a.stride(0),
                    packed_.data_ptr<scalar_t>(), packed_.size(1), c_.data_ptr<scalar_t>(), c_.stride(0),
                    accumulate);
  }

 private:
  Tensor b_, c_, packed_;
  bool small_ = false;
};

}  // namespace seqkern::gemm
