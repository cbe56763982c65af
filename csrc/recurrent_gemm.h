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

// Rows [0, M) of one column panel of kVectors vectors: 4 rows per tile (2 for the widest
// panels, 16 sums in registers either way).
template <typename scalar_t, int kVectors>
inline void panel(int64_t M, int64_t K, const scalar_t* a, int64_t lda, const scalar_t* b, int64_t ldb,
                  scalar_t* c, int64_t ldc, bool accumulate) {
  constexpr int kRows = kVectors > 4 ? 2 : 4;
  // A lone row reuses each loaded vector of b once, so it splits its sums to keep enough
  // multiply-adds in flight.
  constexpr int kSplit = kVectors <= 4 ? 2 : 1;
  int64_t m = 0;
  for (; m + kRows <= M; m += kRows) {
    tile<scalar_t, kRows, kVectors, 1>(K, a + m * lda, lda, b, ldb, c + m * ldc, ldc, accumulate);
  }
  const int64_t rest = M - m;
  a += m * lda;
  c += m * ldc;
  if constexpr (kRows == 4) {
    if (rest == 3) {
      tile<scalar_t, 3, kVectors, 1>(K, a, lda, b, ldb, c, ldc, accumulate);
    } else if (rest == 2) {
      tile<scalar_t, 2, kVectors, 1>(K, a, lda, b, ldb, c, ldc, accumulate);
    }
  }
  if (rest == 1) {
    tile<scalar_t, 1, kVectors, kSplit>(K, a, lda, b, ldb, c, ldc, accumulate);
  }
}

// c (M, N) (+)= a (M, K) . b (K, N); N a multiple of L. Column panels outside, and each
// panel in blocks of K that fit the L1 cache, so that a block of b serves every row of a
// while it is there.
template <typename scalar_t>
void small(int64_t M, int64_t K, int64_t N, const scalar_t* a, int64_t lda, const scalar_t* b, int64_t ldb,
           scalar_t* c, int64_t ldc, bool accumulate) {
  constexpr int64_t lanes = Vector<scalar_t>::lanes;
  constexpr int64_t k_block = 32 * 1024 / (4 * lanes * static_cast<int64_t>(sizeof(scalar_t)));
  const int64_t widest = M <= 2 ? 8 : 4;
  for (int64_t n = 0; n < N;) {
    const int64_t left = (N - n) / lanes;
    const int64_t vectors = left >= widest ? widest : std::min<int64_t>(left, 4);
    int64_t k = 0;
    do {
      const int64_t depth = std::min(k_block, K - k);
      const bool add = accumulate || k > 0;
      const scalar_t* a_k = a + k;
      const scalar_t* b_k = b + k * ldb + n;
      switch (vectors) {
        case 8:
          panel<scalar_t, 8>(M, depth, a_k, lda, b_k, ldb, c + n, ldc, add);
          break;
        case 4:
          panel<scalar_t, 4>(M, depth, a_k, lda, b_k, ldb, c + n, ldc, add);
          break;
        case 3:
          panel<scalar_t, 3>(M, depth, a_k, lda, b_k, ldb, c + n, ldc, add);
          break;
        case 2:
          panel<scalar_t, 2>(M, depth, a_k, lda, b_k, ldb, c + n, ldc, add);
          break;
        default:
          panel<scalar_t, 1>(M, depth, a_k, lda, b_k, ldb, c + n, ldc, add);
          break;
      }
      k += k_block;
    } while (k < K);
    n += vectors * lanes;
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
  // b: (K, N) view of a weight (any strides; typically a transposed weight).
  StepProduct(const Tensor& b, int64_t blocks, bool use_small) : b_(b), blocks_(blocks), small_(use_small) {
    block_cols_ = blocks > 0 ? b.size(1) / blocks : 0;
    block_ld_ = small_ ? padded<scalar_t>(block_cols_) : block_cols_;
    if (small_) {
      pack(b);
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
  // Copies b into packed_ (K, blocks * block_ld), zero in each block's padding, with raw
  // loops that read b along its unit stride.
  void pack(const Tensor& b) {
    const int64_t K = b.size(0), ld = blocks_ * block_ld_;
    packed_ = at::empty({K, ld}, b.options());
    scalar_t* packed = packed_.data_ptr<scalar_t>();
    const scalar_t* source = b.data_ptr<scalar_t>();
    const int64_t stride_k = b.stride(0), stride_n = b.stride(1);
    for (int64_t block = 0; block < blocks_; ++block) {
      scalar_t* target = packed + block * block_ld_;
      const scalar_t* from = source + block * block_cols_ * stride_n;
      if (stride_n <= stride_k) {
        for (int64_t k = 0; k < K; ++k) {
          for (int64_t n = 0; n < block_cols_; ++n) {
            target[k * ld + n] = from[k * stride_k + n * stride_n];
          }
        }
      } else {
        for (int64_t n = 0; n < block_cols_; ++n) {
          for (int64_t k = 0; k < K; ++k) {
            target[k * ld + n] = from[k * stride_k + n * stride_n];
          }
        }
      }
      for (int64_t k = 0; k < K; ++k) {
        std::fill(target + k * ld + block_cols_, target + k * ld + block_ld_, scalar_t(0));
      }
    }
  }

  Tensor b_, packed_;
  int64_t blocks_ = 0, block_cols_ = 0, block_ld_ = 0;
  bool small_ = false;
};

}  // namespace seqkern::gemm
