// Matrix products of the recurrent kernels.
//
// The products over all steps at once (input projection, weight and input gradients) run
// on the kernel below, shared by rows (packed_rows_product in recurrent.cpp), or on ATen's
// BLAS where their columns are not whole vectors. A single step's products with the batch as
// rows (the cells) run without packing the weight (batch_rows_step_product, at the end). The product of each
// step is short (at B = 1, H = 64 a BLAS call's fixed cost is about that of the whole
// product) and repeats with the same weight, which BLAS would pack again on every call. So
// it runs a register-blocked kernel here, on a copy of the weight packed once per layer
// call, over any range of its columns, so that threads can share one product by columns.
//
// Dimension legend (row-major, c = a . b)
//   M  rows of a and c (the batch)     K  inner size     N  columns of b and c
//   L  scalars per vector register     a weight's columns come in blocks (its gates), each
//                                      padded to a multiple of L in the packed copy
#pragma once
#include <ATen/ATen.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "memory.h"

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
constexpr int kVectorRegisters = 32;
#elif defined(__AVX__)
constexpr int kVectorBytes = 32;
constexpr int kVectorRegisters = 16;
#else
constexpr int kVectorBytes = 16;
constexpr int kVectorRegisters = 16;
#endif

// Column panels of c, in vectors. A tile's sums, the vectors of b it loads per k and a
// broadcast of a must all fit the vector registers, or the compiler spills sums to the
// stack in the innermost loop (a 6-by-4 tile of 24 sums runs at half speed with AVX2's 16
// registers). Narrow panels take tiles of up to 6 rows; wide ones (for 1 or 2 rows of a)
// tiles of 2.
constexpr int kNarrowPanel = kVectorRegisters / 8;
constexpr int kWidePanel = kVectorRegisters / 4;

// Calls body(std::integral_constant<int, value>) for value in [kFirst, kLast], so that a
// run-time size picks a kernel compiled for it.
template <int kFirst, int kLast, typename Body>
inline void with_constant(int64_t value, const Body& body) {
  if constexpr (kFirst <= kLast) {
    if (value == kFirst) {
      body(std::integral_constant<int, kFirst>{});
    } else {
      with_constant<kFirst + 1, kLast>(value, body);
    }
  }
}

template <typename scalar_t>
struct Vector {
  typedef scalar_t type __attribute__((vector_size(kVectorBytes)));
  static constexpr int64_t lanes = kVectorBytes / sizeof(scalar_t);

  // Loads and stores at any scalar alignment, one instruction each. (A std::memcpy of a
  // vector array can become a copy through the stack in 16-byte pieces, whose wider reload
  // then stalls on store forwarding: that made the AVX2 step product several times slower.)
  typedef scalar_t unaligned __attribute__((vector_size(kVectorBytes), aligned(alignof(scalar_t)), may_alias));
  static type load(const scalar_t* from) { return *reinterpret_cast<const unaligned*>(from); }
  static void store(scalar_t* to, type value) { *reinterpret_cast<unaligned*>(to) = value; }
};

// Vectors of `lanes` scalars that hold `columns` columns (the last one padded).
inline int64_t whole_vectors(int64_t columns, int64_t lanes) { return (columns + lanes - 1) / lanes; }

template <typename scalar_t>
int64_t padded(int64_t columns) {
  const int64_t lanes = Vector<scalar_t>::lanes;
  return whole_vectors(columns, lanes) * lanes;
}

// sum + scale * b, fused wherever the machine can fuse it (scale: one scalar in every lane).
// Left to itself, the compiler fuses `sum += scale * b` in some instantiations of tile and
// not in others (GCC 12: not in the tile of one row and one vector), and then a row's
// numbers depended on the height of its tile, so on the batch and the thread count.
template <typename vector>
inline vector multiply_add(vector scale, vector b, vector sum) {
#if defined(__FMA__) && !defined(__AVX512F__)
  if constexpr (std::is_same_v<vector, Vector<float>::type>) {
    return reinterpret_cast<vector>(_mm256_fmadd_ps(reinterpret_cast<__m256>(b), reinterpret_cast<__m256>(scale),
                                                    reinterpret_cast<__m256>(sum)));
  } else if constexpr (std::is_same_v<vector, Vector<double>::type>) {
    return reinterpret_cast<vector>(_mm256_fmadd_pd(reinterpret_cast<__m256d>(b), reinterpret_cast<__m256d>(scale),
                                                    reinterpret_cast<__m256d>(sum)));
  }
#elif defined(__AVX512F__)
  if constexpr (std::is_same_v<vector, Vector<float>::type>) {
    return reinterpret_cast<vector>(_mm512_fmadd_ps(reinterpret_cast<__m512>(b), reinterpret_cast<__m512>(scale),
                                                    reinterpret_cast<__m512>(sum)));
  } else if constexpr (std::is_same_v<vector, Vector<double>::type>) {
    return reinterpret_cast<vector>(_mm512_fmadd_pd(reinterpret_cast<__m512d>(b), reinterpret_cast<__m512d>(scale),
                                                    reinterpret_cast<__m512d>(sum)));
  }
#endif
  return sum + scale * b;
}

// One tile of c: kRows rows by kVectors vectors, summed over k < K in registers. a's
// element (r, k) is at a[r * lda + k * ldk] (ldk = 1 for contiguous rows, lda = 1 for the
// transpose of a matrix with contiguous rows). Vector q of b's row k is at
// b + q L + k ldb: ldb = w L in a packed panel of w vectors (StepProduct::pack), b's row
// stride where it is read in place. With kSplit = 2 the even and odd k
// go to separate sums, to keep enough independent multiply-adds in flight in a small tile.
// Never inlined: inlined into panel, GCC 12 kept every sum of a 4-row tile in memory as
// well, storing them on every k.
template <typename scalar_t, int kRows, int kVectors, int kSplit>
__attribute__((noinline)) void tile(int64_t K, const scalar_t* a, int64_t lda, int64_t ldk, const scalar_t* b,
                                    int64_t ldb, scalar_t* c, int64_t ldc, bool accumulate) {
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
  auto step = [&](int s, int64_t k) {
    vector row[kVectors];
    for (int q = 0; q < kVectors; ++q) {
      vector loaded = Vector<scalar_t>::load(b + q * lanes + k * ldb);
#if defined(__GNUC__) && defined(__AVX__)
      // Keeps the loaded vector in a register. Otherwise GCC 12 folds the load into every
      // row's multiply-add in tiles of up to 4 rows (where registers are left), which then
      // reload each vector of b once per row: a 4-row, 4-vector tile ran at 86 GFLOP/s
      // where the 6-row one, which loads each vector once, ran at 282 (Zen 5, one thread,
      // K = 128, b from the L2 cache). On a local rather than on row[q]: given the array's
      // element, GCC 12 stored every sum of a one-vector tile to the stack on every k (an
      // LSTM at B = 16, H = 80, whose panels end in one vector, ran 10% slower forward and
      // 19% backward). tests/test_cpp_codegen.py checks the built tiles for such stores.
      if constexpr (kRows > 1) {
        asm("" : "+v"(loaded));
      }
#endif
      row[q] = loaded;
    }
    for (int r = 0; r < kRows; ++r) {
      const vector scale = a[r * lda + k * ldk] - vector{};
      for (int q = 0; q < kVectors; ++q) {
        sum[s][r][q] = multiply_add(scale, row[q], sum[s][r][q]);
      }
    }
  };
  int64_t k = 0;
  for (; k + kSplit <= K; k += kSplit) {
    for (int s = 0; s < kSplit; ++s) {
      step(s, k + s);
    }
  }
  for (; k < K; ++k) {
    step(0, k);
  }
  for (int r = 0; r < kRows; ++r) {
    for (int q = 0; q < kVectors; ++q) {
      vector total = sum[0][r][q];
      for (int s = 1; s < kSplit; ++s) {
        total += sum[s][r][q];
      }
      if (accumulate) {
        total += Vector<scalar_t>::load(c + r * ldc + q * lanes);
      }
      Vector<scalar_t>::store(c + r * ldc + q * lanes, total);
    }
  }
}

// A tile needs about this many independent sums to hide the latency of its multiply-adds.
constexpr int64_t kMinTileSums = 10;

// The most rows of a tile in a panel of kVectors vectors: a tile's sums, the vectors of b it
// loads per k and a broadcast of a must fit the vector registers.
template <int kVectors>
constexpr int max_tile_rows() {
  return kVectors > kNarrowPanel ? 2 : 6;
}

// Whether a panel of `vectors` vectors tiles M rows in even heights (see panel).
inline bool even_tiles(int64_t M, int64_t vectors, int64_t max_rows) {
  const int64_t tiles = (M + max_rows - 1) / max_rows;
  return M / tiles * vectors >= kMinTileSums;
}

// Rows [0, M) of one column panel of kVectors vectors, in tiles of at most max_tile_rows. With
// kMinTileSums sums or more, the tiles take even heights (8 rows of 4 vectors as 4 + 4
// rather than 6 + 2, whose short tile has too few); where even tiles would have fewer, full
// tiles come first and the rest last (8 rows of 2 vectors as 6 + 2: 1.6x the rate of 4 + 4
// with AVX2). Every row sums its k in the same order whatever its tile, except a `lone_row`
// (the one row of a one-row product, B = 1) in a narrow panel, which splits its sums because
// it reuses each loaded vector of b only once.
template <typename scalar_t, int kVectors>
inline void panel(int64_t M, int64_t K, const scalar_t* a, int64_t lda, int64_t ldk, const scalar_t* b, int64_t ldb,
                  scalar_t* c, int64_t ldc, bool accumulate, bool lone_row) {
  constexpr int kMaxRows = max_tile_rows<kVectors>();
  if (M <= 1) {
    if (M == 1 && lone_row && kVectors <= kNarrowPanel) {
      tile<scalar_t, 1, kVectors, 2>(K, a, lda, ldk, b, ldb, c, ldc, accumulate);
    } else if (M == 1) {
      tile<scalar_t, 1, kVectors, 1>(K, a, lda, ldk, b, ldb, c, ldc, accumulate);
    }
    return;
  }
  const int64_t tiles = (M + kMaxRows - 1) / kMaxRows;
  const bool even = even_tiles(M, kVectors, kMaxRows);
  for (int64_t index = 0, m = 0; index < tiles; ++index) {
    const int64_t rows = even ? M / tiles + (index < M % tiles ? 1 : 0) : std::min<int64_t>(kMaxRows, M - m);
    const scalar_t* a_m = a + m * lda;
    scalar_t* c_m = c + m * ldc;
    with_constant<1, kMaxRows>(rows, [&](auto height) {
      tile<scalar_t, decltype(height)::value, kVectors, 1>(K, a_m, lda, ldk, b, ldb, c_m, ldc, accumulate);
    });
    m += rows;
  }
}

// Bytes of b in one block of K of a narrow panel (see panels). Each block ends with a load
// and a store of every sum of c, so blocks too short cost that traffic, and blocks too deep
// fall out of the caches before the last rows of a pass. On Zen 4 (AVX-512: 32 KiB L1, 1 MiB
// L2 per core) 64 KiB ran best: against 32 KiB, an LSTM layer at T = 100, B = 64, I = H =
// 512 took 0.89x the time forward and 0.96x backward, where 16 KiB took 1.06x backward;
// 128 KiB took 1.02x the backward time of 64 KiB. The AVX2 blocks keep the 16 KiB they
// were measured with on Zen 3.
#if defined(__AVX512F__)
constexpr int64_t kPanelBlockBytes = int64_t{64} << 10;
#else
constexpr int64_t kPanelBlockBytes = int64_t{16} << 10;
#endif

// Rows [0, M) of c in column panels of `widest` vectors (fewer at the right edge), each panel
// in blocks of K (kPanelBlockBytes of a narrow panel's b), so that a block of b serves every
// row of a while it is in the caches. With `in_panels`, b is packed panel by panel (see
// StepProduct::pack): a panel of w vectors starting at vector p holds its K rows of w
// vectors one after another from b + p K L on.
template <typename scalar_t>
void panels(int64_t M, int64_t K, int64_t N, int64_t widest, const scalar_t* a, int64_t lda, int64_t ldk,
            const scalar_t* b, int64_t ldb, scalar_t* c, int64_t ldc, bool accumulate, bool lone_row,
            bool in_panels = false) {
  constexpr int64_t lanes = Vector<scalar_t>::lanes;
  constexpr int64_t k_block = kPanelBlockBytes / (kNarrowPanel * kVectorBytes);
  for (int64_t n = 0; n < N;) {
    const int64_t left = (N - n) / lanes;
    const int64_t vectors = left >= widest ? widest : std::min<int64_t>(left, kNarrowPanel);
    const scalar_t* b_panel = in_panels ? b + n * K : b + n;
    const int64_t panel_ldb = in_panels ? vectors * lanes : ldb;
    int64_t k = 0;
    do {
      const int64_t depth = std::min(k_block, K - k);
      const bool add = accumulate || k > 0;
      const scalar_t* a_k = a + k * ldk;
      const scalar_t* b_k = b_panel + k * panel_ldb;
      const auto run = [&](auto width) {
        panel<scalar_t, decltype(width)::value>(M, depth, a_k, lda, ldk, b_k, panel_ldb, c + n, ldc, add,
                                                lone_row);
      };
      if (vectors == kWidePanel) {
        run(std::integral_constant<int, kWidePanel>{});
      } else {
        with_constant<1, kNarrowPanel>(vectors, run);
      }
      k += k_block;
    } while (k < K);
    n += vectors * lanes;
  }
}

// c (M, N) (+)= a (M, K) . b (K, N), N a multiple of L, b's rows contiguous and ldb apart,
// read where they lie (see packed_rows_product). Few rows take wide panels, whose short tiles still
// hold enough sums (AVX2, M = 4: 2 + 2 rows of 4 vectors run 1.15 to 1.25x the rate of
// one 4-row tile of 2); so do the one or two rows that narrow panels would leave to a
// short last tile (M = 8: 6 rows narrow and 2 wide, 1.05 to 1.1x 6 + 2 in
// narrow panels; Zen 3, one thread, K = 64 and 128). The tiling only decides which sums run
// side by side, never a row's order of summation, so every split gives the same bits (a
// product of one row too: it is a chunk of rows of a larger one, see packed_rows_product).
template <typename scalar_t>
void row_major_product(int64_t M, int64_t K, int64_t N, const scalar_t* a, int64_t lda, int64_t ldk, const scalar_t* b,
                       int64_t ldb, scalar_t* c, int64_t ldc, bool accumulate) {
  constexpr int64_t kNarrowRows = max_tile_rows<kNarrowPanel>();
  const auto too_few_sums = [](int64_t rows) { return rows * kNarrowPanel < kMinTileSums; };
  if (too_few_sums(M)) {
    panels(M, K, N, kWidePanel, a, lda, ldk, b, ldb, c, ldc, accumulate, false);
    return;
  }
  const int64_t rest = M % kNarrowRows;
  const int64_t tail = !even_tiles(M, kNarrowPanel, kNarrowRows) && too_few_sums(rest) ? rest : 0;
  panels(M - tail, K, N, kNarrowPanel, a, lda, ldk, b, ldb, c, ldc, accumulate, false);
  if (tail > 0) {
    panels(tail, K, N, kWidePanel, a + (M - tail) * lda, lda, ldk, b, ldb, c + (M - tail) * ldc, ldc, accumulate,
           false);
  }
}

// c (M, N) (+)= a (M, K) . b (K, N) where b is packed in narrow panels (StepProduct::pack):
// each k of a panel is one run of its vectors, so a tile reads b as one stream rather than
// one per vector (the strips this layout replaced held each vector's K rows one after
// another). Streaming a weight from the L2 cache, that bounds a step of few rows: one row
// against 128 by 256 of b took 0.71 us instead of 1.27 from strips, 4 rows 1.20 instead of
// 1.65 (Zen 5, one thread, a standalone loop); 6 rows, which use each vector six times, the
// same. In the layer, one thread: LSTM B = 1, H = 128 forward 3.1-3.2 -> 2.4 us a step, the
// RNN's training step at B = 1 and 16, H = 128, 0.72 and 0.81x the time; on two threads the
// time was the same (each thread's half streams no faster; the state's trip between the
// cores and the barrier take the rest). So every row count takes narrow panels here; a
// `lone_row` (see panel) in tiles of two sums per vector.
template <typename scalar_t>
void panel_product(int64_t M, int64_t K, int64_t N, const scalar_t* a, int64_t lda, int64_t ldk, const scalar_t* b,
                   scalar_t* c, int64_t ldc, bool accumulate, bool lone_row) {
  panels(M, K, N, kNarrowPanel, a, lda, ldk, b, 0, c, ldc, accumulate, lone_row, true);
}

#if defined(__AVX__)
// to[k * to_stride + n] = from[n * from_stride + k] for k, n < 8: an 8-by-8 block of floats
// transposed in registers.
inline void transpose_8x8(const float* from, int64_t from_stride, float* to, int64_t to_stride) {
  __m256 row[8], pair[8], quad[8];
  for (int n = 0; n < 8; ++n) {
    row[n] = _mm256_loadu_ps(from + n * from_stride);
  }
  for (int n = 0; n < 8; n += 2) {
    pair[n] = _mm256_unpacklo_ps(row[n], row[n + 1]);
    pair[n + 1] = _mm256_unpackhi_ps(row[n], row[n + 1]);
  }
  for (int n = 0; n < 8; n += 4) {
    for (int half = 0; half < 2; ++half) {
      quad[n + half] = _mm256_shuffle_ps(pair[n + half], pair[n + 2 + half], _MM_SHUFFLE(1, 0, 1, 0));
      quad[n + 2 + half] = _mm256_shuffle_ps(pair[n + half], pair[n + 2 + half], _MM_SHUFFLE(3, 2, 3, 2));
    }
  }
  // quad[j] (rows 0-3) and quad[4 + j] (rows 4-7) hold k = order[j] in their low halves
  // and k = order[j] + 4 in their high halves.
  const int order[4] = {0, 2, 1, 3};
  for (int q = 0; q < 4; ++q) {
    _mm256_storeu_ps(to + q * to_stride, _mm256_permute2f128_ps(quad[order[q]], quad[4 + order[q]], 0x20));
    _mm256_storeu_ps(to + (q + 4) * to_stride, _mm256_permute2f128_ps(quad[order[q]], quad[4 + order[q]], 0x31));
  }
}
#endif

// to[r * K + k] = from[r + k * stride] for r < rows, k < K: a block of rows of a transposed
// matrix (whose k lie `stride` apart) copied into contiguous rows.
template <typename scalar_t>
void gather_rows(const scalar_t* from, int64_t stride, int64_t rows, int64_t K, scalar_t* to) {
  int64_t r = 0;
#if defined(__AVX__)
  if constexpr (std::is_same_v<scalar_t, float>) {
    for (; r + 8 <= rows; r += 8) {
      int64_t k = 0;
      for (; k + 8 <= K; k += 8) {
        transpose_8x8(from + k * stride + r, stride, to + r * K + k, K);
      }
      for (; k < K; ++k) {
        for (int64_t row = r; row < r + 8; ++row) {
          to[row * K + k] = from[row + k * stride];
        }
      }
    }
  }
#endif
  for (; r < rows; ++r) {
    for (int64_t k = 0; k < K; ++k) {
      to[r * K + k] = from[r + k * stride];
    }
  }
}

// The product c (M, N) (+)= a (M, K) . b (K, N) that every step of a time loop repeats with
// the same b, whose N columns form `blocks` equal blocks (the gates). c's blocks lie
// block_ld() apart (padded to whole vectors), and a thread may compute any vector-aligned
// column range of every block.
template <typename scalar_t>
class StepProduct {
 public:
  StepProduct() = default;
  // b: (K, N) view of a weight (any strides; typically a transposed weight). Nothing is
  // packed yet: each thread packs the columns it will compute (pack), in its own caches.
  // Without `packed`, there is no room to pack into: only the sizes are of use (a single step,
  // whose products are batch_rows_step_product's).
  StepProduct(const Tensor& b, int64_t blocks, bool packed = true) : b_(b), blocks_(blocks) {
    constexpr int64_t lanes = Vector<scalar_t>::lanes;
    block_cols_ = blocks > 0 ? b.size(1) / blocks : 0;
    block_ld_ = padded<scalar_t>(block_cols_);
    if (packed) {
      packed_ = empty_large({blocks_ * block_ld_ / lanes, b.size(0), lanes}, b.options());
    }
  }

  int64_t block_ld() const { return block_ld_; }
  int64_t block_cols() const { return block_cols_; }
  int64_t width() const { return blocks_ * block_ld_; }
  // Whether steps run on a packed copy (pack, then columns), rather than once or not at all.
  bool packs() const { return packed_.defined(); }
  // Bytes of the packed copy of b (whether or not it is packed): what every step streams.
  int64_t packed_bytes() const {
    return b_.defined() ? width() * b_.size(0) * static_cast<int64_t>(sizeof(scalar_t)) : 0;
  }

  // Copies columns [begin, end) of every block of b into packed_, in panels of up to
  // kNarrowPanel vectors from `begin` on (what panel_product reads where it computes the
  // same columns): a panel of w vectors at vector p holds, from p K L on, row k's w vectors
  // at k w L, zero in each block's padding. Vector by vector, so that the L columns read
  // stay in the L1 cache whatever b's strides (a transposed weight is read down its
  // columns).
  void pack(int64_t begin, int64_t end) {
    constexpr int64_t lanes = Vector<scalar_t>::lanes;
    const int64_t K = b_.size(0);
    scalar_t* packed = packed_.data_ptr<scalar_t>();
    const scalar_t* source = b_.data_ptr<scalar_t>();
    const int64_t stride_k = b_.stride(0), stride_n = b_.stride(1);
    for (int64_t block = 0; block < blocks_; ++block) {
      for (int64_t panel = begin; panel < end; panel += kNarrowPanel * lanes) {
        const int64_t ld = std::min(kNarrowPanel * lanes, end - panel);
        scalar_t* panel_data = packed + (block * block_ld_ + panel) * K;
        for (int64_t first = panel; first < panel + ld; first += lanes) {
          const int64_t width = std::max<int64_t>(0, std::min(lanes, block_cols_ - first));
          const scalar_t* from = source + (block * block_cols_ + first) * stride_n;
          scalar_t* to = panel_data + (first - panel);
          int64_t k = 0;
          if (width == lanes && stride_k == 1) {
            for (; k + lanes <= K; k += lanes) {
              transpose_block(from + k, stride_n, to + k * ld, ld);
            }
          }
          for (; k < K; ++k) {
            for (int64_t n = 0; n < width; ++n) {
              to[k * ld + n] = from[k * stride_k + n * stride_n];
            }
            std::fill(to + k * ld + width, to + k * ld + lanes, scalar_t(0));
          }
        }
      }
    }
  }

  // to[k * ld + n] = from[n * stride + k] for k, n < L: a square block of a transposed
  // weight, whose L rows the scalar copy would read a scalar at a time from L cache lines
  // (the forward products' weights: their packing was a twelfth of an LSTM forward at B = 1).
  static void transpose_block(const scalar_t* from, int64_t stride, scalar_t* to, int64_t ld) {
    constexpr int64_t lanes = Vector<scalar_t>::lanes;
#if defined(__AVX__)
    if constexpr (std::is_same_v<scalar_t, float>) {
      for (int64_t n = 0; n < lanes; n += 8) {
        for (int64_t k = 0; k < lanes; k += 8) {
          transpose_8x8(from + n * stride + k, stride, to + k * ld + n, ld);
        }
      }
      return;
    }
#endif
    for (int64_t k = 0; k < lanes; ++k) {
      for (int64_t n = 0; n < lanes; ++n) {
        to[k * ld + n] = from[n * stride + k];
      }
    }
  }

  // Columns [begin, end) of every block; begin and end are multiples of L, and pack packed
  // them from `begin` on (in one call or in several that each began a panel apart from it).
  // a's element (r, k) is at a[r * lda + k * ldk]. A one-row product splits its sums where
  // `one_row_splits` (see panel): only where every product of its kind has that one row.
  void columns(const scalar_t* a, int64_t lda, scalar_t* c, int64_t ldc, int64_t M, int64_t begin, int64_t end,
               bool accumulate, int64_t ldk = 1, bool one_row_splits = true) const {
    if (end <= begin) {
      return;
    }
    const scalar_t* packed = packed_.data_ptr<scalar_t>();
    const int64_t K = packed_.size(1);
    for (int64_t block = 0; block < blocks_; ++block) {
      const int64_t at = block * block_ld_ + begin;
      panel_product<scalar_t>(M, K, end - begin, a, lda, ldk, packed + at * K, c + at, ldc, accumulate,
                              one_row_splits && M == 1);
    }
  }

 private:
  Tensor b_, packed_;
  int64_t blocks_ = 0, block_cols_ = 0, block_ld_ = 0;
};

// c (+)= a (M, K) . wᵀ for a single step (the cells), w an (N, K) view whose rows or columns
// are contiguous (a weight, or a transposed one): computed as cᵀ = w . aᵀ on the kernel above
// with aᵀ packed, which is small (the batch), instead of the weight, which BLAS packs on every
// call and which costs about as much to pack as the product takes. Row n of w gives column
// (n / block_cols) * block_ld + n % block_cols of c (a cell's gate blocks, each padded to whole
// vectors). Pays where a's rows fill at least half a vector: at B = 16, H = 128 (Zen 5, one
// thread) 4.2 us against BLAS's 8.4, and 13 against 28 at N = 4 H.
template <typename scalar_t>
bool transposed_step_product_pays(int64_t M) {
  return 2 * M >= Vector<scalar_t>::lanes;
}

template <typename scalar_t>
void transposed_step_product(const Tensor& a, const Tensor& w, scalar_t* c, int64_t ldc, bool accumulate,
                             int64_t block_cols, int64_t block_ld) {
  const int64_t M = a.size(0), N = w.size(0);
  if (M == 0 || N == 0) {
    return;
  }
  StepProduct<scalar_t> a_transposed(a.t(), 1);
  const int64_t width = a_transposed.width();
  a_transposed.pack(0, width);
  const Tensor c_transposed = at::empty({N, width}, a.options());
  scalar_t* const rows = c_transposed.data_ptr<scalar_t>();
  const scalar_t* const w_data = w.data_ptr<scalar_t>();
  const int64_t ldw = w.stride(0), ldk = w.stride(1);
  // Rows of cᵀ are independent: threads take blocks of them, each at least a few vectors' work.
  constexpr int64_t kRowsPerTask = 64;
  at::parallel_for(0, N, kRowsPerTask, [&](int64_t begin, int64_t end) {
    a_transposed.columns(w_data + begin * ldw, ldw, rows + begin * width, width, end - begin, 0, width, false, ldk);
    for (int64_t n = begin; n < end; ++n) {
      scalar_t* const column = c + (n / block_cols) * block_ld + n % block_cols;
      const scalar_t* const row = rows + n * width;
      for (int64_t m = 0; m < M; ++m) {
        column[m * ldc] = accumulate ? column[m * ldc] + row[m] : row[m];
      }
    }
  });
}

// The sum of a vector's lanes, in one fixed order.
template <typename scalar_t>
inline scalar_t sum_of_lanes(typename Vector<scalar_t>::type v) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<scalar_t, float>) {
    return _mm512_reduce_add_ps(reinterpret_cast<__m512>(v));
  } else if constexpr (std::is_same_v<scalar_t, double>) {
    return _mm512_reduce_add_pd(reinterpret_cast<__m512d>(v));
  }
#endif
  scalar_t sum = 0;
  for (int64_t lane = 0; lane < Vector<scalar_t>::lanes; ++lane) {
    sum += v[lane];
  }
  return sum;
}

// The same product as transposed_step_product, for a batch too small for it (fewer rows of a
// than half a vector: B = 1 in a decoder), straight from the weight, on one thread. Where w's
// rows are contiguous (the forward's x W^T), each element is a dot product of two contiguous
// rows; where its columns are (the backward's products with W), each row of c sums the
// weight's rows scaled by a's elements. Without BLAS's call and dispatch, which cost more than
// the product at these sizes.
template <typename scalar_t>
void few_rows_step_product(const Tensor& a, const Tensor& w, scalar_t* c, int64_t ldc, bool accumulate,
                           int64_t block_cols, int64_t block_ld) {
  using vector = typename Vector<scalar_t>::type;
  constexpr int64_t lanes = Vector<scalar_t>::lanes;
  const int64_t M = a.size(0), N = w.size(0), K = w.size(1), lda = a.stride(0);
  TORCH_INTERNAL_ASSERT(a.stride(1) == 1 && (w.stride(1) == 1 || w.stride(0) == 1));
  const scalar_t* const a_data = a.data_ptr<scalar_t>();
  const scalar_t* const w_data = w.data_ptr<scalar_t>();
  // Four independent sums at a time where there are four, so that the multiply-adds' latency
  // is hidden; one at a time after that. Each sum runs over k in the same order either way.
  constexpr int64_t kGroup = 4;
  using group = std::integral_constant<int64_t, kGroup>;
  using single = std::integral_constant<int64_t, 1>;
  if (w.stride(1) == 1) {
    const int64_t ldw = w.stride(0), whole = K / lanes * lanes;
    // c[m, n + j] for j < count: dot products of a's row m with w's rows n + j.
    const auto dot_products = [&](auto count, int64_t m, int64_t n) {
      constexpr int64_t kCount = decltype(count)::value;
      const scalar_t* const row = a_data + m * lda;
      vector sums[kCount] = {};
      for (int64_t k = 0; k < whole; k += lanes) {
        const vector x = Vector<scalar_t>::load(row + k);
        for (int64_t j = 0; j < kCount; ++j) {
          sums[j] = multiply_add(x, Vector<scalar_t>::load(w_data + (n + j) * ldw + k), sums[j]);
        }
      }
      for (int64_t j = 0; j < kCount; ++j) {
        const scalar_t* const weights = w_data + (n + j) * ldw;
        scalar_t sum = sum_of_lanes<scalar_t>(sums[j]);
        for (int64_t k = whole; k < K; ++k) {
          sum += row[k] * weights[k];
        }
        scalar_t& out = c[m * ldc + ((n + j) / block_cols) * block_ld + (n + j) % block_cols];
        out = accumulate ? out + sum : sum;
      }
    };
    for (int64_t m = 0; m < M; ++m) {
      int64_t n = 0;
      for (; n + kGroup <= N; n += kGroup) {
        dot_products(group{}, m, n);
      }
      for (; n < N; ++n) {
        dot_products(single{}, m, n);
      }
    }
    return;
  }
  // w[n, k] = weight[k * ldk + n]: c's row m is the sum over k of a[m, k] times the weight's row k.
  TORCH_INTERNAL_ASSERT(block_cols == N && block_ld == N);
  const int64_t ldk = w.stride(1);
  // Vectors [n, n + count L) of c's row m.
  const auto scaled_rows = [&](auto count, int64_t m, int64_t n) {
    const scalar_t* const row = a_data + m * lda;
    constexpr int64_t kCount = decltype(count)::value;
    scalar_t* const out = c + m * ldc + n;
    vector sums[kCount];
    for (int64_t j = 0; j < kCount; ++j) {
      sums[j] = accumulate ? Vector<scalar_t>::load(out + j * lanes) : vector{};
    }
    for (int64_t k = 0; k < K; ++k) {
      const vector scale = vector{} + row[k];
      for (int64_t j = 0; j < kCount; ++j) {
        sums[j] = multiply_add(scale, Vector<scalar_t>::load(w_data + k * ldk + n + j * lanes), sums[j]);
      }
    }
    for (int64_t j = 0; j < kCount; ++j) {
      Vector<scalar_t>::store(out + j * lanes, sums[j]);
    }
  };
  for (int64_t m = 0; m < M; ++m) {
    int64_t n = 0;
    for (; n + kGroup * lanes <= N; n += kGroup * lanes) {
      scaled_rows(group{}, m, n);
    }
    for (; n + lanes <= N; n += lanes) {
      scaled_rows(single{}, m, n);
    }
    const scalar_t* const row = a_data + m * lda;
    scalar_t* const out = c + m * ldc;
    for (; n < N; ++n) {
      scalar_t sum = accumulate ? out[n] : scalar_t(0);
      for (int64_t k = 0; k < K; ++k) {
        sum += row[k] * w_data[k * ldk + n];
      }
      out[n] = sum;
    }
  }
}

// A single step's product with the batch as rows, c (+)= a . wᵀ: transposed where the batch
// fills enough of a vector, straight from the weight where it does not.
template <typename scalar_t>
void batch_rows_step_product(const Tensor& a, const Tensor& w, scalar_t* c, int64_t ldc, bool accumulate,
                             int64_t block_cols, int64_t block_ld) {
  if (transposed_step_product_pays<scalar_t>(a.size(0))) {
    transposed_step_product<scalar_t>(a, w, c, ldc, accumulate, block_cols, block_ld);
  } else {
    few_rows_step_product<scalar_t>(a, w, c, ldc, accumulate, block_cols, block_ld);
  }
}

}  // namespace seqkern::gemm
