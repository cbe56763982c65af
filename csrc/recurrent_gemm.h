// Matrix products of the recurrent kernels.
//
// Large products (all steps at once, or the steps of a big batch) go to ATen's BLAS on
// tensor views. The per-step product of a small batch is too short for a BLAS call to pay
// off (its fixed cost is about that of the whole product at B = 1, H = 64), so it runs a
// register-blocked kernel on a copy of the weight packed once per layer call, over any
// range of its columns, so that threads can share one product by columns.
//
// Dimension legend (row-major, c = a . b)
//   M  rows of a and c (the batch)     K  inner size     N  columns of b and c
//   L  scalars per vector register     a weight's columns come in blocks (its gates), each
//                                      padded to a multiple of L in the packed copy
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

// One tile of c: kRows rows by kVectors vectors, summed over all K in registers. With
// kSplit = 2 the even and odd k go to separate sums, to keep enough independent
// multiply-adds in flight when the tile is small.
template <typename scalar_t, int kRows, int kVectors, int kSplit>
inline void tile(int64_t K, const scalar_t* a, int64_t lda, const scalar_t* b, int64_t ldb, scalar_t* c,
                 int64_t ldc, bool accumulate) {
  using vector = typename Vector<scalar_t>::type;
  constexpr int64_t lanes = Vector<scalar_t>::lanes;
  vector sum[kSplit][kRows][kVectors];
  for (int s = 0; s < kSplit; ++s) {
    for (int r = 0; r < kRows; ++r) {
      for (int q = 0; q < kVectors; ++q) {
        sum[s][r][q] = vector{};
      }
    }
  }
  int64_t k = 0;
  for (; k + kSplit <= K; k += kSplit) {
    for (int s = 0; s < kSplit; ++s) {
      vector row[kVectors];
      for (int q = 0; q < kVectors; ++q) {
        std::memcpy(&row[q], b + (k + s) * ldb + q * lanes, sizeof(vector));
      }
      for (int r = 0; r < kRows; ++r) {
        const scalar_t scale = a[r * lda + k + s];
        for (int q = 0; q < kVectors; ++q) {
          sum[s][r][q] += scale * row[q];
        }
      }
    }
  }
  for (; k < K; ++k) {
    vector row[kVectors];
    for (int q = 0; q < kVectors; ++q) {
      std::memcpy(&row[q], b + k * ldb + q * lanes, sizeof(vector));
    }
    for (int r = 0; r < kRows; ++r) {
      const scalar_t scale = a[r * lda + k];
      for (int q = 0; q < kVectors; ++q) {
        sum[0][r][q] += scale * row[q];
      }
    }
  }
  for (int r = 0; r < kRows; ++r) {
    for (int q = 0; q < kVectors; ++q) {
      vector total = sum[0][r][q];
      for (int s = 1; s < kSplit; ++s) {
        total += sum[s][r][q];
      }
      if (accumulate) {
        vector old;
        std::memcpy(&old, c + r * ldc + q * lanes, sizeof(vector));
        total += old;
      }
      std::memcpy(c + r * ldc + q * lanes, &total, sizeof(vector));
    }
  }
}

template <typename scalar_t, int kRows>
inline void row_block(int64_t K, int64_t N, const scalar_t* a, int64_t lda, const scalar_t* b, int64_t ldb,
                      scalar_t* c, int64_t ldc, bool accumulate) {
  constexpr int64_t lanes = Vector<scalar_t>::lanes;
  int64_t n = 0;
  // Fewer rows reuse each loaded row of b less, so they take wider tiles (or split sums)
  // to keep enough multiply-adds in flight; at most 16 sums live in registers.
  if (kRows <= 2) {
    for (; n + 8 * lanes <= N; n += 8 * lanes) {
      tile<scalar_t, kRows, 8, 1>(K, a, lda, b + n, ldb, c + n, ldc, accumulate);
    }
  }
  for (; n + 4 * lanes <= N; n += 4 * lanes) {
    tile<scalar_t, kRows, 4, kRows == 1 ? 2 : 1>(K, a, lda, b + n, ldb, c + n, ldc, accumulate);
  }
  for (; n + 2 * lanes <= N; n += 2 * lanes) {
    tile<scalar_t, kRows, 2, 2>(K, a, lda, b + n, ldb, c + n, ldc, accumulate);
  }
  for (; n < N; n += lanes) {
    tile<scalar_t, kRows, 1, 2>(K, a, lda, b + n, ldb, c + n, ldc, accumulate);
  }
}

// c (M, N) (+)= a (M, K) . b (K, N); N a multiple of L.
template <typename scalar_t>
void small(int64_t M, int64_t K, int64_t N, const scalar_t* a, int64_t lda, const scalar_t* b, int64_t ldb,
           scalar_t* c, int64_t ldc, bool accumulate) {
  int64_t m = 0;
  for (; m + 4 <= M; m += 4) {
    row_block<scalar_t, 4>(K, N, a + m * lda, lda, b, ldb, c + m * ldc, ldc, accumulate);
  }
  switch (M - m) {
    case 3:
      row_block<scalar_t, 3>(K, N, a + m * lda, lda, b, ldb, c + m * ldc, ldc, accumulate);
      break;
    case 2:
      row_block<scalar_t, 2>(K, N, a + m * lda, lda, b, ldb, c + m * ldc, ldc, accumulate);
      break;
    case 1:
      row_block<scalar_t, 1>(K, N, a + m * lda, lda, b, ldb, c + m * ldc, ldc, accumulate);
      break;
    default:
      break;
  }
}

// The product c (M, N) (+)= a (M, K) . b (K, N) that every step of a time loop repeats with
// the same b, whose N columns form `blocks` equal blocks (the gates). With the small
// kernel, c's blocks lie block_ld() apart (padded to whole vectors), and a thread may
// compute any vector-aligned column range of every block.
template <typename scalar_t>
class StepProduct {
 public:
  StepProduct() = default;
  StepProduct(const Tensor& b, int64_t blocks, bool use_small)
      : b_(b), blocks_(blocks), small_(use_small) {
    block_cols_ = blocks > 0 ? b.size(1) / blocks : 0;
    block_ld_ = small_ ? padded<scalar_t>(block_cols_) : block_cols_;
    if (small_) {
      packed_ = at::zeros({b.size(0), blocks * block_ld_}, b.options());
      for (int64_t block = 0; block < blocks; ++block) {
        packed_.narrow(1, block * block_ld_, block_cols_).copy_(b.narrow(1, block * block_cols_, block_cols_));
      }
    }
  }

  bool is_small() const { return small_; }
  int64_t block_ld() const { return block_ld_; }
  int64_t width() const { return blocks_ * block_ld_; }

  // Small kernel: columns [begin, end) of every block; begin and end are multiples of L
  // (or end = block_ld()).
  void columns(const scalar_t* a, int64_t lda, scalar_t* c, int64_t ldc, int64_t M, int64_t begin, int64_t end,
               bool accumulate) const {
    if (end <= begin) {
      return;
    }
    const scalar_t* packed = packed_.data_ptr<scalar_t>();
    const int64_t ldb = packed_.size(1), K = packed_.size(0);
    for (int64_t block = 0; block < blocks_; ++block) {
      const int64_t at = block * block_ld_ + begin;
      small<scalar_t>(M, K, end - begin, a, lda, packed + at, ldb, c + at, ldc, accumulate);
    }
  }

  // BLAS: every column; a (M, K) and c (M, N) views.
  void all(const Tensor& a, Tensor& c, bool accumulate) const { blas(a, b_, c, accumulate); }

 private:
  Tensor b_, packed_;
  int64_t blocks_ = 0, block_cols_ = 0, block_ld_ = 0;
  bool small_ = false;
};

}  // namespace seqkern::gemm
