// Max-pool kernels (CPU): forward with or without argmax indices, and backward.
// Argument lists: the backend contract at the top of seqkern/ops/pooling.py.
//
// Dimension legend
//   N batch, C channels. Every pool runs as a 3-D pool (D, H, W) -> (OD, OH, OW): a 1-D
//   pool has D = H = 1 and a 2-D pool D = 1, each with a kernel of 1 there.
//   plane   the D*H*W input elements of one (n, c); indices are flat offsets in a plane
//   row     the W elements at one (d, h) of a plane
//   layouts contiguous (N, C, D, H, W) and channels_last (N, D, H, W, C) in memory
//
// The window rule (SPEC.md, "Max pooling"): taps are visited in (kd, kh, kw) order and a
// tap replaces the running maximum when it is strictly greater or NaN, starting from -inf
// with the window's first in-bounds position as index. Taps in the padding take part only
// with a finite pad_value (then with index -1); ceil_mode taps past the padding never do.

// Vectorized<T> is built for the instruction set this file is compiled for, inside a
// namespace of its own, so that other translation units built with other CPU_CAPABILITY
// settings cannot collide with these inline definitions.
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && defined(__AVX512VL__)
#define CPU_CAPABILITY_AVX512
#elif defined(__AVX2__) && defined(__FMA__)
#define CPU_CAPABILITY_AVX2
#endif
#define CPU_CAPABILITY seqkern_pooling
#include <ATen/cpu/vec/vec.h>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "memory.h"
#include "python_format.h"
#include "seqkern.h"

namespace seqkern {
namespace {

using at::Tensor;
using Padding = std::vector<std::pair<int64_t, int64_t>>;

// ---------------------------------------------------------------------------------------
// Argument checks: the Python path's (seqkern/ops/pooling.py), with its exception types and
// messages, so that the op says the same on every backend.

// pad_value must be -inf or a value of an integer input's dtype (floating dtypes round it).
void check_pad_value(at::ScalarType dtype, double pad_value) {
  TORCH_CHECK_VALUE(!std::isnan(pad_value), "seqkern max_pool: pad_value must not be NaN");
  if (at::isFloatingType(dtype) || pad_value == -std::numeric_limits<double>::infinity()) {
    return;
  }
  bool representable = false;
  AT_DISPATCH_INTEGRAL_TYPES(dtype, "max_pool pad_value", [&] {
    representable = pad_value == std::trunc(pad_value) &&
                    pad_value >= static_cast<double>(std::numeric_limits<scalar_t>::min()) &&
                    pad_value <= static_cast<double>(std::numeric_limits<scalar_t>::max());
  });
  TORCH_CHECK_VALUE(representable, "seqkern max_pool: pad_value ", python_float(pad_value),
                    " is not a value of the input dtype ", python_dtype(dtype),
                    "; use -inf or an integer in its range");
}

bool supported_dtype(at::ScalarType dtype) {
  switch (dtype) {
    case at::kHalf: case at::kBFloat16: case at::kFloat: case at::kDouble:
    case at::kByte: case at::kChar: case at::kShort: case at::kInt: case at::kLong:
      return true;
    default:
      return false;
  }
}

// The window arguments of `op` for an input of `shape` (N, C, *S): an entry per spatial axis
// (two of padding), positive sizes, non-negative padding.
void check_window(const char* op, at::IntArrayRef shape, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                  at::IntArrayRef dilation, at::IntArrayRef padding) {
  const int64_t spatial = static_cast<int64_t>(shape.size()) - 2;
  const std::pair<const char*, at::IntArrayRef> counted[] = {
      {"kernel_size", kernel_size}, {"stride", stride}, {"dilation", dilation}, {"padding", padding}};
  for (const auto& [name, values] : counted) {
    const int64_t wanted = std::string(name) == "padding" ? 2 * spatial : spatial;
    TORCH_CHECK_VALUE(static_cast<int64_t>(values.size()) == wanted, "seqkern ", op, ": ", name, " needs ", wanted,
                      " entries for a ", spatial, "-d pool, got ", python_list(values));
  }
  for (const auto& [name, values] : {counted[0], counted[1], counted[2]}) {
    for (const int64_t value : values) {
      TORCH_CHECK_VALUE(value >= 1, "seqkern ", op, ": ", name, " must be positive, got ", python_list(values));
    }
  }
  for (const int64_t side : padding) {
    TORCH_CHECK_VALUE(side >= 0, "seqkern ", op, ": padding must be non-negative, got ", python_list(padding));
  }
  for (int64_t axis = 0; axis < spatial; ++axis) {
    TORCH_CHECK_VALUE(shape[2 + axis] >= 1, "seqkern ", op, ": spatial sizes must be positive, got shape ",
                      python_tuple(shape));
  }
}

void check_forward_arguments(const Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                             at::IntArrayRef dilation, at::IntArrayRef padding, bool ceil_mode, double pad_value,
                             std::optional<at::ScalarType> index_dtype) {
  const int64_t spatial = input.dim() - 2;
  TORCH_CHECK_VALUE(spatial >= 1 && spatial <= 3,
                    "seqkern max_pool: input must be (N, C, *S) with 1 to 3 spatial axes, got shape ",
                    python_tuple(input.sizes()));
  TORCH_CHECK_NOT_IMPLEMENTED(supported_dtype(input.scalar_type()), "seqkern max_pool: dtype ",
                              python_dtype(input.scalar_type()), " is not supported");
  check_window("max_pool", input.sizes(), kernel_size, stride, dilation, padding);
  check_pad_value(input.scalar_type(), pad_value);
  TORCH_CHECK_VALUE(!index_dtype || *index_dtype == at::kLong || *index_dtype == at::kInt,
                    "seqkern max_pool: index_dtype must be torch.int64, torch.int32 or None, got ",
                    python_dtype(*index_dtype));
  int64_t plane = 1;
  for (int64_t axis = 0; axis < spatial; ++axis) {
    plane *= input.size(2 + axis);
  }
  TORCH_CHECK_VALUE(index_dtype != at::kInt || plane <= std::numeric_limits<int32_t>::max(),
                    "seqkern max_pool: int32 indices need planes of fewer than 2**31 elements, got shape ",
                    python_tuple(input.sizes()));
  std::vector<int64_t> sizes;
  bool too_small = false;
  for (int64_t axis = 0; axis < spatial; ++axis) {
    sizes.push_back(pool_output_size(input.size(2 + axis), kernel_size[axis], stride[axis], dilation[axis],
                                     padding[2 * axis], padding[2 * axis + 1], ceil_mode));
    too_small = too_small || sizes.back() < 1;
  }
  TORCH_CHECK_VALUE(!too_small, "seqkern max_pool: input of shape ", python_tuple(input.sizes()),
                    " gives output size ", python_tuple(sizes), ", which is too small");
}

void check_backward_arguments(const Tensor& grad_output, const Tensor& indices, at::IntArrayRef input_size,
                              at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef dilation,
                              at::IntArrayRef padding) {
  TORCH_CHECK_VALUE(grad_output.dim() >= 3 && grad_output.dim() <= 5,
                    "seqkern max_pool_backward: grad_output must be (N, C, *S) with 1 to 3 spatial axes, got shape ",
                    python_tuple(grad_output.sizes()));
  TORCH_CHECK_VALUE(indices.sizes() == grad_output.sizes(), "seqkern max_pool_backward: indices of shape ",
                    python_tuple(indices.sizes()), " do not match grad_output of shape ",
                    python_tuple(grad_output.sizes()));
  TORCH_CHECK_VALUE(indices.scalar_type() == at::kLong || indices.scalar_type() == at::kInt,
                    "seqkern max_pool_backward: indices must be int64 or int32, got ",
                    python_dtype(indices.scalar_type()));
  TORCH_CHECK_VALUE(static_cast<int64_t>(input_size.size()) == grad_output.dim() &&
                        input_size[0] == grad_output.size(0) && input_size[1] == grad_output.size(1),
                    "seqkern max_pool_backward: input_size ", python_list(input_size),
                    " does not match grad_output of shape ", python_tuple(grad_output.sizes()),
                    " in rank, batch and channels");
  check_window("max_pool_backward", input_size, kernel_size, stride, dilation, padding);
}

// One spatial axis of the pool.
struct Axis {
  int64_t size = 1, out = 1, kernel = 1, stride = 1, dilation = 1, before = 0, after = 0;

  int64_t start(int64_t o) const { return o * stride - before; }
  bool inside(int64_t p) const { return p >= 0 && p < size; }
  // Windows never start before -before; ceil_mode windows may run past size + after.
  bool in_padding(int64_t p) const { return p < size + after; }
  // Position of the first in-bounds tap of window o, or -1 when it has none.
  int64_t first_inside(int64_t o) const {
    const int64_t first = start(o);
    int64_t p = first;
    if (p < 0) p += (-p + dilation - 1) / dilation * dilation;
    return p < size && p <= first + (kernel - 1) * dilation ? p : -1;
  }
  // Outputs [interior_lo, interior_hi) have every tap inside the input.
  int64_t interior_lo() const { return std::min(out, (before + stride - 1) / stride); }
  int64_t interior_hi() const {
    const int64_t last_start = size - 1 - (kernel - 1) * dilation + before;
    const int64_t hi = last_start < 0 ? 0 : std::min(out, last_start / stride + 1);
    return std::max(hi, interior_lo());
  }
};

int64_t floor_div(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

struct Geometry {
  int64_t batch = 0, channels = 0;
  Axis axis[3];  // d, h, w
  bool channels_last = false;
  bool pad_competes = false;  // finite pad_value: padded taps take part
  double pad_value = 0;

  const Axis& d() const { return axis[0]; }
  const Axis& h() const { return axis[1]; }
  const Axis& w() const { return axis[2]; }
  int64_t plane() const { return axis[0].size * axis[1].size * axis[2].size; }
  int64_t out_plane() const { return axis[0].out * axis[1].out * axis[2].out; }
  // Flat in-plane offset of window (od, oh, ow)'s first in-bounds position, or -1.
  int64_t first_inside(int64_t od, int64_t oh, int64_t ow) const {
    const int64_t fd = d().first_inside(od), fh = h().first_inside(oh), fw = w().first_inside(ow);
    return fd < 0 || fh < 0 || fw < 0 ? -1 : (fd * h().size + fh) * w().size + fw;
  }
  // Output row number -> (n, od, oh); output rows are counted in (n, od, oh) order.
  struct Row {
    int64_t n, od, oh;
  };
  Row output_row(int64_t row) const { return {row / (h().out * d().out), row / h().out % d().out, row % h().out}; }
};

// The taps of window o along one axis that take part, in order: visit(k, position, inside)
// for every in-bounds tap k and, with a finite pad_value, every padded one.
template <typename Visit>
inline void for_each_axis_tap(const Axis& a, int64_t o, bool pad_competes, const Visit& visit) {
  for (int64_t k = 0; k < a.kernel; ++k) {
    const int64_t p = a.start(o) + k * a.dilation;
    const bool inside = a.inside(p);
    if (inside || (pad_competes && a.in_padding(p))) visit(k, p, inside);
  }
}

// The rows (d, h) of window (od, oh) that take part, in (kd, kh) order: visit(kd, d, h,
// inside), inside when the row lies in the input.
template <typename Visit>
inline void for_each_row_tap(const Geometry& g, int64_t od, int64_t oh, const Visit& visit) {
  for_each_axis_tap(g.d(), od, g.pad_competes, [&](int64_t kd, int64_t d, bool d_in) {
    for_each_axis_tap(g.h(), oh, g.pad_competes, [&](int64_t, int64_t h, bool h_in) { visit(kd, d, h, d_in && h_in); });
  });
}

// The taps of window (od, oh, ow) that take part, in (kd, kh, kw) order: visit(d, h, w, inside).
template <typename Visit>
inline void for_each_tap(const Geometry& g, int64_t od, int64_t oh, int64_t ow, const Visit& visit) {
  for_each_row_tap(g, od, oh, [&](int64_t, int64_t d, int64_t h, bool row_in) {
    for_each_axis_tap(g.w(), ow, g.pad_competes,
                      [&](int64_t, int64_t w, bool w_in) { visit(d, h, w, row_in && w_in); });
  });
}

// Sets every spatial axis of g but its output size from the per-axis window arguments
// (checked: check_window); shape: (N, C, *S) of the input, padding (before, after) per axis.
void set_axes(Geometry& g, at::IntArrayRef shape, at::IntArrayRef kernel, at::IntArrayRef stride,
              at::IntArrayRef dilation, at::IntArrayRef padding) {
  const int64_t spatial = static_cast<int64_t>(shape.size()) - 2;
  g.batch = shape[0];
  g.channels = shape[1];
  for (int64_t i = 0; i < spatial; ++i) {
    Axis& a = g.axis[3 - spatial + i];
    a.size = shape[2 + i];
    a.kernel = kernel[i];
    a.stride = stride[i];
    a.dilation = dilation[i];
    a.before = padding[2 * i];
    a.after = padding[2 * i + 1];
  }
}

Geometry make_geometry(const Tensor& input, at::IntArrayRef kernel, at::IntArrayRef stride, at::IntArrayRef dilation,
                       at::IntArrayRef padding, bool ceil_mode, double pad_value) {
  Geometry g;
  set_axes(g, input.sizes(), kernel, stride, dilation, padding);
  g.pad_value = pad_value;
  g.pad_competes = pad_value > -std::numeric_limits<double>::infinity();
  for (int64_t i = 3 - (input.dim() - 2); i < 3; ++i) {
    Axis& a = g.axis[i];
    a.out = pool_output_size(a.size, a.kernel, a.stride, a.dilation, a.before, a.after, ceil_mode);
  }
  return g;
}

// Element strides of a (N, C, D, H, W) view of a dense tensor in either layout.
struct Strides {
  int64_t n, c, d, h, w;
};

Strides layout_strides(bool channels_last, int64_t channels, int64_t depth, int64_t height, int64_t width) {
  if (channels_last) {
    return {depth * height * width * channels, 1, height * width * channels, width * channels, channels};
  }
  return {channels * depth * height * width, depth * height * width, height * width, width, 1};
}

template <typename scalar_t>
using opmath_t = std::conditional_t<std::is_same_v<scalar_t, at::BFloat16> || std::is_same_v<scalar_t, at::Half>,
                                    float, scalar_t>;

template <typename T>
T lowest_value() {
  if constexpr (std::numeric_limits<T>::has_infinity) {
    return -std::numeric_limits<T>::infinity();
  } else {
    return std::numeric_limits<T>::lowest();
  }
}

template <typename T>
bool is_nan(T value) {
  if constexpr (std::is_floating_point_v<T>) {
    return std::isnan(value);
  } else {
    return false;
  }
}

// The window rule for one tap: it replaces the running maximum when strictly greater or NaN.
template <typename T>
bool replaces(T value, T best) {
  return value > best || is_nan(value);
}

// Chunk sizes for at::parallel_for: about this many elements of work per task, a few
// microseconds. Small inputs still split: at (1, 16, 28, 28) a 2x2 forward on 2 threads took
// 9-10 us with this grain and 13 us, on one thread, with four times as much.
constexpr int64_t kGrainElements = 8192;

int64_t grain_for(int64_t work_per_item) { return std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, work_per_item)); }

// ---------------------------------------------------------------------------------------
// Forward, any dtype and layout: the window rule tap by tap.
// ---------------------------------------------------------------------------------------
template <typename scalar_t, typename index_t>
void forward_generic(const scalar_t* input, scalar_t* output, index_t* indices, const Geometry& g) {
  using acc_t = opmath_t<scalar_t>;
  const Axis &ad = g.d(), &ah = g.h(), &aw = g.w();
  const Strides in = layout_strides(g.channels_last, g.channels, ad.size, ah.size, aw.size);
  const Strides out = layout_strides(g.channels_last, g.channels, ad.out, ah.out, aw.out);
  const acc_t pad = g.pad_competes ? static_cast<acc_t>(g.pad_value) : lowest_value<acc_t>();
  const int64_t window = ad.kernel * ah.kernel * aw.kernel;

  auto pool_one = [&](int64_t n, int64_t c, int64_t od, int64_t oh, int64_t ow) {
    const scalar_t* x = input + n * in.n + c * in.c;
    acc_t best = lowest_value<acc_t>();
    int64_t best_index = g.first_inside(od, oh, ow);
    for_each_tap(g, od, oh, ow, [&](int64_t d, int64_t h, int64_t w, bool inside) {
      acc_t value = pad;
      int64_t index = -1;
      if (inside) {
        value = static_cast<acc_t>(x[d * in.d + h * in.h + w * in.w]);
        index = (d * ah.size + h) * aw.size + w;
      }
      if (replaces(value, best)) {
        best = value;
        best_index = index;
      }
    });
    const int64_t o = n * out.n + c * out.c + od * out.d + oh * out.h + ow * out.w;
    output[o] = static_cast<scalar_t>(best);
    if (indices != nullptr) indices[o] = static_cast<index_t>(best_index);
  };

  const int64_t rows = g.batch * ad.out * ah.out;
  at::parallel_for(0, rows, grain_for(g.channels * aw.out * window), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const auto [n, od, oh] = g.output_row(row);
      if (g.channels_last) {
        for (int64_t ow = 0; ow < aw.out; ++ow)
          for (int64_t c = 0; c < g.channels; ++c) pool_one(n, c, od, oh, ow);
      } else {
        for (int64_t c = 0; c < g.channels; ++c)
          for (int64_t ow = 0; ow < aw.out; ++ow) pool_one(n, c, od, oh, ow);
      }
    }
  });
}

// ---------------------------------------------------------------------------------------
// Vectorised forward for float and double. Index lanes carry flat offsets as scalar_t,
// exact while a plane has at most kVectorPlaneLimit elements; a padded winner carries
// kPaddedMark, which stays negative after any row offset is added and becomes -1.
// ---------------------------------------------------------------------------------------
constexpr int64_t kVectorPlaneLimit = int64_t{1} << 24;

template <typename scalar_t>
constexpr scalar_t kPaddedMark = -static_cast<scalar_t>(kVectorPlaneLimit);

// The window rule on lanes: v replaces the running maximum where strictly greater or NaN,
// and index() the running index there. Without indices only the maximum is kept (NaN wins).
template <bool kIndices, typename Vec, typename Index>
inline void take_better_lanes(Vec& best, Vec& best_index, const Vec& v, const Index& index) {
  if constexpr (kIndices) {
    const Vec replace = (v > best) | v.isnan();
    best = Vec::blendv(best, v, replace);
    best_index = Vec::blendv(best_index, index(), replace);
  } else {
    best = at::vec::maximum(best, v);
  }
}

template <typename scalar_t, typename index_t>
void store_indices(const at::vec::Vectorized<scalar_t>& lanes, index_t* dst, int64_t count) {
#if defined(CPU_CAPABILITY_AVX512)
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (count == at::vec::Vectorized<float>::size()) {
      // Every negative offset (a padded mark) clamps to -1.
      const __m512 clamped = _mm512_max_ps(lanes, _mm512_set1_ps(-1.0f));
      if constexpr (std::is_same_v<index_t, int64_t>) {
        _mm512_storeu_si512(dst, _mm512_cvttps_epi64(_mm512_castps512_ps256(clamped)));
        _mm512_storeu_si512(dst + 8, _mm512_cvttps_epi64(_mm512_extractf32x8_ps(clamped, 1)));
      } else {
        _mm512_storeu_si512(dst, _mm512_cvttps_epi32(clamped));
      }
      return;
    }
  }
#endif
  __at_align__ scalar_t values[at::vec::Vectorized<scalar_t>::size()];
  lanes.store(values);
  for (int64_t i = 0; i < count; ++i) dst[i] = values[i] < 0 ? index_t(-1) : static_cast<index_t>(values[i]);
}

// Contiguous layout. The window is separable: each needed input row is first reduced
// along W ("horizontal", kept with the winning column), then the rows of a window are
// reduced in (kd, kh) order ("vertical"). Strict > in row order after strict > within
// each row keeps the first maximum of the whole window in (kd, kh, kw) order, and NaN
// replacement keeps the last NaN, exactly like the tap-by-tap rule.
template <typename scalar_t, bool kIndices, typename index_t>
class ContiguousPool {
  using Vec = at::vec::Vectorized<scalar_t>;
  using IVec = at::vec::Vectorized<at::vec::int_same_size_t<scalar_t>>;
  static constexpr int64_t kLanes = Vec::size();
  // Per-task buffer of horizontally reduced rows, in elements per array.
  static constexpr int64_t kBufferElements = 32768;
  static constexpr int64_t kMaxColumns = 4096;

 public:
  explicit ContiguousPool(const Geometry& g) : g_(g) {}

  void run(const scalar_t* input, scalar_t* output, index_t* indices) const {
    const Axis &ad = g_.d(), &ah = g_.h(), &aw = g_.w();
    const int64_t planes = g_.batch * g_.channels;
    const int64_t columns = std::min(aw.out, kMaxColumns);
    const int64_t column_blocks = (aw.out + columns - 1) / columns;
    // Output rows per task: as many as the buffer holds, but enough tasks for every thread.
    const int64_t rows_fit = kBufferElements / (ad.kernel * columns);
    int64_t block = std::max<int64_t>(1, (rows_fit - (ah.kernel - 1) * ah.dilation - 1) / ah.stride + 1);
    const int64_t wanted_tasks = 4 * at::get_num_threads();
    const int64_t other_tasks = planes * ad.out * column_blocks;
    if (other_tasks < wanted_tasks) {
      const int64_t splits = (wanted_tasks + other_tasks - 1) / other_tasks;
      block = std::min(block, (ah.out + splits - 1) / splits);
    }
    block = std::max<int64_t>(1, std::min(block, ah.out));
    const int64_t row_blocks = (ah.out + block - 1) / block;
    const int64_t buffer_rows = std::min(ah.size, (block - 1) * ah.stride + (ah.kernel - 1) * ah.dilation + 1);
    const int64_t tasks = planes * ad.out * row_blocks * column_blocks;
    const int64_t work = block * columns * ad.kernel * ah.kernel * (aw.kernel + 1);

    at::parallel_for(0, tasks, grain_for(work), [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> values(ad.kernel * buffer_rows * columns);
      std::vector<scalar_t> columns_won(kIndices ? values.size() : 0);
      std::vector<RowTap> taps;
      taps.reserve(ad.kernel * ah.kernel);
      for (int64_t task = begin; task < end; ++task) {
        int64_t rest = task;
        const int64_t column_block = rest % column_blocks;
        rest /= column_blocks;
        const int64_t row_block = rest % row_blocks;
        rest /= row_blocks;
        const int64_t od = rest % ad.out;
        const int64_t plane = rest / ad.out;
        const int64_t ow0 = column_block * columns, ow1 = std::min(aw.out, ow0 + columns);
        const int64_t oh0 = row_block * block, oh1 = std::min(ah.out, oh0 + block);
        const int64_t h_lo = std::max<int64_t>(0, ah.start(oh0));
        const int64_t h_hi = std::min(ah.size, ah.start(oh1 - 1) + (ah.kernel - 1) * ah.dilation + 1);
        const scalar_t* x = input + plane * g_.plane();
        // Horizontal pass over every in-bounds row the block's windows touch.
        for (int64_t kd = 0; kd < ad.kernel; ++kd) {
          const int64_t d = ad.start(od) + kd * ad.dilation;
          if (!ad.inside(d)) continue;
          for (int64_t h = h_lo; h < h_hi; ++h) {
            const int64_t slot = (kd * buffer_rows + (h - h_lo)) * columns;
            horizontal(x + (d * ah.size + h) * aw.size, ow0, ow1, values.data() + slot,
                       kIndices ? columns_won.data() + slot : nullptr);
          }
        }
        const int64_t out_plane = plane * g_.out_plane();
        for (int64_t oh = oh0; oh < oh1; ++oh) {
          collect_row_taps(od, oh, h_lo, buffer_rows, columns, values.data(), columns_won.data(), taps);
          const int64_t o = out_plane + (od * ah.out + oh) * aw.out + ow0;
          vertical(taps, ow1 - ow0, output + o, kIndices ? indices + o : nullptr);
        }
      }
    });
  }

 private:
  struct RowTap {
    const scalar_t* values;   // nullptr: a padded row
    const scalar_t* columns;  // winning columns of the row
    scalar_t offset;          // flat offset of the row in its plane
  };

  // Lanes i < count read p[i * stride]; `available` elements from p lie in the row.
  Vec taps_at(const scalar_t* p, int64_t count, int64_t available) const {
    const int64_t stride = g_.w().stride;
    if (stride == 1) return Vec::loadu(p, count);
    if (stride == 2) {
      const int64_t first = std::min(kLanes, available);
      const int64_t second = std::max<int64_t>(0, std::min(kLanes, available - kLanes));
      return at::vec::deinterleave2(Vec::loadu(p, first), Vec::loadu(p + kLanes, second)).first;
    }
    // Lanes past count repeat the last one, so that no read leaves the row.
    using lane_offset_t = at::vec::int_same_size_t<scalar_t>;
    const IVec offsets = at::vec::minimum(IVec::arange(0, static_cast<lane_offset_t>(stride)),
                                          IVec(static_cast<lane_offset_t>((count - 1) * stride)));
    return at::vec::gather<sizeof(scalar_t)>(p, offsets);
  }

  // One edge output of a row (its window reaches outside the input), tap by tap.
  void horizontal_edge(const scalar_t* row, int64_t ow, scalar_t* value, scalar_t* column) const {
    const Axis& aw = g_.w();
    const scalar_t pad = static_cast<scalar_t>(g_.pad_value);
    scalar_t best = lowest_value<scalar_t>();
    const int64_t first = aw.first_inside(ow);
    scalar_t best_column = first < 0 ? kPaddedMark<scalar_t> : static_cast<scalar_t>(first);
    for_each_axis_tap(aw, ow, g_.pad_competes, [&](int64_t, int64_t w, bool inside) {
      const scalar_t v = inside ? row[w] : pad;
      if (replaces(v, best)) {
        best = v;
        best_column = inside ? static_cast<scalar_t>(w) : kPaddedMark<scalar_t>;
      }
    });
    *value = best;
    if (kIndices) *column = best_column;
  }

  void horizontal(const scalar_t* row, int64_t ow0, int64_t ow1, scalar_t* values, scalar_t* columns) const {
    const Axis& aw = g_.w();
    const int64_t lo = std::clamp(aw.interior_lo(), ow0, ow1);
    const int64_t hi = std::clamp(aw.interior_hi(), lo, ow1);
    for (int64_t ow = ow0; ow < lo; ++ow) horizontal_edge(row, ow, values + ow - ow0, columns + ow - ow0);
    for (int64_t ow = lo; ow < hi; ow += kLanes) {
      const int64_t count = std::min(kLanes, hi - ow);
      const int64_t start = aw.start(ow);
      const int64_t available = aw.size - start;
      Vec best = taps_at(row + start, count, available);
      Vec best_column, first_column;
      if constexpr (kIndices) {
        first_column = Vec::arange(static_cast<scalar_t>(start), static_cast<scalar_t>(aw.stride));
        best_column = first_column;
      }
      for (int64_t kw = 1; kw < aw.kernel; ++kw) {
        const int64_t shift = kw * aw.dilation;
        const Vec v = taps_at(row + start + shift, count, available - shift);
        take_better_lanes<kIndices>(best, best_column, v,
                                    [&] { return first_column + Vec(static_cast<scalar_t>(shift)); });
      }
      best.store(values + ow - ow0, count);
      if constexpr (kIndices) best_column.store(columns + ow - ow0, count);
    }
    for (int64_t ow = hi; ow < ow1; ++ow) horizontal_edge(row, ow, values + ow - ow0, columns + ow - ow0);
  }

  // The rows of window (od, oh) in (kd, kh) order: buffered rows and padded rows.
  void collect_row_taps(int64_t od, int64_t oh, int64_t h_lo, int64_t buffer_rows, int64_t columns,
                        const scalar_t* values, const scalar_t* columns_won, std::vector<RowTap>& taps) const {
    taps.clear();
    for_each_row_tap(g_, od, oh, [&](int64_t kd, int64_t d, int64_t h, bool inside) {
      if (inside) {
        const int64_t slot = (kd * buffer_rows + (h - h_lo)) * columns;
        taps.push_back({values + slot, kIndices ? columns_won + slot : nullptr,
                        static_cast<scalar_t>((d * g_.h().size + h) * g_.w().size)});
      } else {
        taps.push_back({nullptr, nullptr, 0});
      }
    });
  }

  void vertical(const std::vector<RowTap>& taps, int64_t count_all, scalar_t* out, index_t* out_indices) const {
    const Vec pad(static_cast<scalar_t>(g_.pad_value));
    const Vec padded_mark(kPaddedMark<scalar_t>);
    const RowTap* first_inside = nullptr;
    for (const RowTap& tap : taps) {
      if (tap.values != nullptr) {
        first_inside = &tap;
        break;
      }
    }
    for (int64_t j = 0; j < count_all; j += kLanes) {
      const int64_t count = std::min(kLanes, count_all - j);
      Vec best(lowest_value<scalar_t>());
      Vec best_index = padded_mark;
      if constexpr (kIndices) {
        if (first_inside != nullptr) best_index = Vec(first_inside->offset) + Vec::loadu(first_inside->columns + j, count);
      }
      for (const RowTap& tap : taps) {
        const Vec v = tap.values != nullptr ? Vec::loadu(tap.values + j, count) : pad;
        take_better_lanes<kIndices>(best, best_index, v, [&] {
          return tap.values != nullptr ? Vec(tap.offset) + Vec::loadu(tap.columns + j, count) : padded_mark;
        });
      }
      best.store(out + j, count);
      if constexpr (kIndices) store_indices(best_index, out_indices + j, count);
    }
  }

  const Geometry& g_;
};

// channels_last layout: lanes run along C, and each output position visits its taps in
// window order, which is the window rule itself, lane by lane. The taps are visited once
// per block of kBlockVectors channel vectors, whose maxima stay in registers: visited once
// per vector, the window's bookkeeping cost as much as the loads. Zen 5, 2 threads, 3x3
// stride 2: 0.75-0.8x the time at N = 32, C = 128, 56 x 56 (0.7-0.75x with indices) and
// 0.8-0.85x at N = 2, C = 64, 112 x 112; N = 32 at 112 x 112 (100 MB, bound by memory) the
// same within noise.
template <typename scalar_t, bool kIndices, typename index_t>
void forward_channels_last(const scalar_t* input, scalar_t* output, index_t* indices, const Geometry& g) {
  using Vec = at::vec::Vectorized<scalar_t>;
  constexpr int64_t kLanes = Vec::size();
  constexpr int kBlockVectors = 4;
  const Axis &ad = g.d(), &ah = g.h(), &aw = g.w();
  const int64_t channels = g.channels;
  const Vec pad(static_cast<scalar_t>(g.pad_value));
  struct Tap {
    int64_t offset;  // element offset of the tap's channel vector; -1: padded
    scalar_t index;
  };
  const int64_t rows = g.batch * ad.out * ah.out;
  const int64_t window = ad.kernel * ah.kernel * aw.kernel;
  // Where the input is larger than the caches, each output position asks for the input
  // pixels its window rows will reach kPrefetchBytes further on. The hardware prefetchers
  // do not keep up with the window's rows side by side: 3x3 stride 2 at N = 32, C = 64,
  // 112 x 112 (100 MB in, 25 MB out) took 7.6-8.3 ms, twice what moving its bytes takes,
  // and 4.6-5.3 ms with 2 KiB ahead (4 positions); 2x2 stride 2 went from 5.2-7.0 to
  // 3.5-5.3 ms, and 3x3 at C = 128, 56 x 56 from 3.2-3.8 to 1.9-2.7 ms (Zen 5, 32 MiB L3,
  // 2 threads; alternating processes). An input the caches hold has nothing to gain, and
  // below kPrefetchFromBytes the loop is compiled without the prefetches.
  constexpr int64_t kPrefetchBytes = 2048;
  constexpr int64_t kPrefetchFromBytes = int64_t{16} << 20;
  const bool prefetching = g.batch * g.plane() * channels * static_cast<int64_t>(sizeof(scalar_t)) > kPrefetchFromBytes;
  const int64_t step_bytes = aw.stride * channels * static_cast<int64_t>(sizeof(scalar_t));
  const int64_t prefetch_ahead = std::max<int64_t>(1, (kPrefetchBytes + step_bytes - 1) / step_bytes);
  const auto pool_rows = [&](auto prefetch) {
    at::parallel_for(0, rows, grain_for(aw.out * channels * window), [&](int64_t begin, int64_t end) {
      std::vector<Tap> taps;
      taps.reserve(window);
      for (int64_t row = begin; row < end; ++row) {
        const auto [n, od, oh] = g.output_row(row);
        const scalar_t* x = input + n * g.plane() * channels;
        for (int64_t ow = 0; ow < aw.out; ++ow) {
          if constexpr (decltype(prefetch)::value) {
            // The pixels [start(ow'), start(ow' + 1)) of every in-bounds row of the windows of
            // ow' = ow + prefetch_ahead: across an output row, every pixel of its windows'
            // rows is asked for once.
            const int64_t w_first = std::max<int64_t>(0, aw.start(ow + prefetch_ahead));
            const int64_t w_last = std::min(aw.size, aw.start(ow + prefetch_ahead + 1));
            for (int64_t kd = 0; w_first < w_last && kd < ad.kernel; ++kd) {
              const int64_t d = ad.start(od) + kd * ad.dilation;
              for (int64_t kh = 0; ad.inside(d) && kh < ah.kernel; ++kh) {
                const int64_t h = ah.start(oh) + kh * ah.dilation;
                if (!ah.inside(h)) continue;
                const scalar_t* pixels = x + (d * ah.size + h) * aw.size * channels;
                const char* from = reinterpret_cast<const char*>(pixels + w_first * channels);
                const char* to = reinterpret_cast<const char*>(pixels + w_last * channels);
                for (; from < to; from += 64) __builtin_prefetch(from, 0, 3);
              }
            }
          }
          taps.clear();
          for_each_tap(g, od, oh, ow, [&](int64_t d, int64_t h, int64_t w, bool inside) {
            if (inside) {
              const int64_t flat = (d * ah.size + h) * aw.size + w;
              taps.push_back({flat * channels, static_cast<scalar_t>(flat)});
            } else {
              taps.push_back({-1, -1});
            }
          });
          const Vec first_index(static_cast<scalar_t>(g.first_inside(od, oh, ow)));
          const int64_t o = (((n * ad.out + od) * ah.out + oh) * aw.out + ow) * channels;
          // Channels [c, c + kVectors lanes) over every tap at once; a partial block is one
          // vector of `count` lanes.
          const auto pool_channels = [&](auto vectors, auto partial, int64_t c, int64_t count) {
            constexpr int kVectors = decltype(vectors)::value;
            const auto load = [&](const scalar_t* at) {
              if constexpr (decltype(partial)::value) {
                return Vec::loadu(at, count);
              } else {
                return Vec::loadu(at);
              }
            };
            Vec best[kVectors], best_index[kVectors];
            for (int v = 0; v < kVectors; ++v) {
              best[v] = Vec(lowest_value<scalar_t>());
              best_index[v] = first_index;
            }
            for (const Tap& tap : taps) {
              const auto index = [&] { return Vec(tap.index); };
              if (tap.offset >= 0) {
                for (int v = 0; v < kVectors; ++v) {
                  take_better_lanes<kIndices>(best[v], best_index[v], load(x + tap.offset + c + v * kLanes), index);
                }
              } else {
                for (int v = 0; v < kVectors; ++v) {
                  take_better_lanes<kIndices>(best[v], best_index[v], pad, index);
                }
              }
            }
            for (int v = 0; v < kVectors; ++v) {
              best[v].store(output + o + c + v * kLanes, count);
              if constexpr (kIndices) store_indices(best_index[v], indices + o + c + v * kLanes, count);
            }
          };
          int64_t c = 0;
          for (; c + kBlockVectors * kLanes <= channels; c += kBlockVectors * kLanes) {
            pool_channels(std::integral_constant<int, kBlockVectors>{}, std::false_type{}, c, kLanes);
          }
          for (; c < channels; c += kLanes) {
            pool_channels(std::integral_constant<int, 1>{}, std::true_type{}, c, std::min(kLanes, channels - c));
          }
        }
      }
    });
  };
  if (prefetching) {
    pool_rows(std::true_type{});
  } else {
    pool_rows(std::false_type{});
  }
}

template <typename scalar_t, bool kIndices, typename index_t>
void forward_vectorized(const scalar_t* input, scalar_t* output, index_t* indices, const Geometry& g) {
  if (g.channels_last) {
    forward_channels_last<scalar_t, kIndices, index_t>(input, output, indices, g);
  } else {
    ContiguousPool<scalar_t, kIndices, index_t>(g).run(input, output, indices);
  }
}

}  // namespace

int64_t pool_output_size(int64_t length, int64_t kernel, int64_t stride, int64_t dilation, int64_t before,
                         int64_t after, bool ceil_mode) {
  int64_t out = floor_div(length + before + after - dilation * (kernel - 1) - 1 + (ceil_mode ? stride - 1 : 0),
                          stride) + 1;
  if (ceil_mode && (out - 1) * stride >= length + before) --out;
  return out;
}

std::tuple<Tensor, Tensor> max_pool_forward(const Tensor& input_arg, at::IntArrayRef kernel_size,
                                            at::IntArrayRef stride, at::IntArrayRef dilation, at::IntArrayRef padding,
                                            bool ceil_mode, double pad_value,
                                            std::optional<at::ScalarType> index_dtype) {
  TORCH_CHECK(input_arg.device().is_cpu(), "seqkern max_pool_forward (C++): input must be a CPU tensor, got ",
              input_arg.device());
  check_forward_arguments(input_arg, kernel_size, stride, dilation, padding, ceil_mode, pad_value, index_dtype);
  Geometry g = make_geometry(input_arg, kernel_size, stride, dilation, padding, ceil_mode, pad_value);
  const bool need_indices = index_dtype.has_value();
  const auto format = input_arg.dim() >= 4 ? input_arg.suggest_memory_format() : at::MemoryFormat::Contiguous;
  g.channels_last = format != at::MemoryFormat::Contiguous;
  const Tensor input = input_arg.contiguous(format);
  std::vector<int64_t> sizes = {g.batch, g.channels};
  for (int64_t i = 3 - (input.dim() - 2); i < 3; ++i) sizes.push_back(g.axis[i].out);
  Tensor output = empty_large(sizes, input.options().memory_format(format));
  Tensor indices = need_indices ? empty_large(sizes, input.options().dtype(*index_dtype).memory_format(format))
                                : at::empty({0}, input.options().dtype(at::kLong));
  if (output.numel() == 0) return {output, indices};
  AT_DISPATCH_ALL_TYPES_AND2(at::kBFloat16, at::kHalf, input.scalar_type(), "max_pool_forward", [&] {
    const scalar_t* in = input.const_data_ptr<scalar_t>();
    scalar_t* out = output.mutable_data_ptr<scalar_t>();
    auto pool = [&](auto* index_data) {
      using index_t = std::remove_pointer_t<decltype(index_data)>;
      if constexpr (std::is_same_v<scalar_t, float> || std::is_same_v<scalar_t, double>) {
        if (g.plane() <= kVectorPlaneLimit) {
          if (index_data != nullptr) {
            forward_vectorized<scalar_t, true, index_t>(in, out, index_data, g);
          } else {
            forward_vectorized<scalar_t, false, index_t>(in, out, nullptr, g);
          }
          return;
        }
      }
      forward_generic<scalar_t, index_t>(in, out, index_data, g);
    };
    if (!need_indices) {
      pool(static_cast<int64_t*>(nullptr));
    } else if (*index_dtype == at::kLong) {
      pool(indices.mutable_data_ptr<int64_t>());
    } else {
      pool(indices.mutable_data_ptr<int32_t>());
    }
  });
  return {output, indices};
}

namespace {

// ---------------------------------------------------------------------------------------
// Backward. Both layouts sum each input element's gradients in increasing output order
// (torch's scatter order) with no two threads touching one element: deterministic, and
// bit-identical to torch for float and double. Reduced precision sums in float.
// ---------------------------------------------------------------------------------------

// Zeroed gradient sums for a stretch of grad_input, one stretch at a time: float and double
// sum in place; reduced precision sums in a float buffer that finish() rounds into place.
template <typename scalar_t>
class GradientSums {
 public:
  using acc_t = opmath_t<scalar_t>;

  // capacity: the longest stretch.
  explicit GradientSums(int64_t capacity) : buffer_(kInPlace ? 0 : capacity) {}

  acc_t* start(scalar_t* stretch, int64_t count) {
    stretch_ = stretch;
    count_ = count;
    acc_t* sums;
    if constexpr (kInPlace) {
      sums = stretch;
    } else {
      sums = buffer_.data();
    }
    std::fill(sums, sums + count, acc_t(0));
    return sums;
  }

  void finish() const {
    if constexpr (!kInPlace) {
      for (int64_t i = 0; i < count_; ++i) stretch_[i] = static_cast<scalar_t>(buffer_[i]);
    }
  }

 private:
  static constexpr bool kInPlace = std::is_same_v<acc_t, scalar_t>;
  std::vector<acc_t> buffer_;
  scalar_t* stretch_ = nullptr;
  int64_t count_ = 0;
};

// Contiguous: zero a plane, then add each output gradient into its argmax. A task owns
// whole planes, so the plane stays in cache between the two passes.
template <typename scalar_t, typename index_t>
void backward_contiguous(const scalar_t* grad_output, const index_t* indices, scalar_t* grad_input,
                         const Geometry& g) {
  using acc_t = opmath_t<scalar_t>;
  const int64_t plane = g.plane(), out_plane = g.out_plane();
  at::parallel_for(0, g.batch * g.channels, grain_for(plane + out_plane), [&](int64_t begin, int64_t end) {
    GradientSums<scalar_t> plane_sums(plane);
    for (int64_t p = begin; p < end; ++p) {
      acc_t* sums = plane_sums.start(grad_input + p * plane, plane);
      const scalar_t* go = grad_output + p * out_plane;
      const index_t* idx = indices + p * out_plane;
      for (int64_t o = 0; o < out_plane; ++o) {
        const int64_t index = idx[o];
        if (index < 0) continue;
        TORCH_CHECK(index < plane, "seqkern max_pool_backward: index ", index, " is outside a plane of ", plane,
                    " input elements");
        sums[index] += static_cast<acc_t>(go[o]);
      }
      plane_sums.finish();
    }
  });
}

#if defined(CPU_CAPABILITY_AVX512)
// For whole vectors of 16 channels from c = 0: slab[(idx[c] - first) * channels + c] +=
// go[c] wherever idx[c] lies in [first, last), with one gather and one masked scatter per
// vector (each lane its own channel, so no two lanes of a vector meet). Returns the
// channels done: it stops at a vector holding an index past the plane, which the scalar
// loop then rejects. Each element sees the same additions in the same order as there.
// Planes and slabs of at most INT32_MAX elements.
// 3x3 stride 2, 2 threads, Zen 5: the backward at N = 32, C = 64, 112 x 112 took 9.9-11.5 ms
// with the scalar loop alone and 5.6-6.9 ms with this; C = 128, 56 x 56: 5.0-6.0 -> 2.7-3.3.
inline int64_t add_gradient_vectors(const int32_t* idx, const float* go, float* slab, int64_t first, int64_t last,
                                    int64_t plane, int64_t channels) {
  const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i first_v = _mm512_set1_epi32(static_cast<int32_t>(first));
  const __m512i last_v = _mm512_set1_epi32(static_cast<int32_t>(last));
  const __m512i plane_v = _mm512_set1_epi32(static_cast<int32_t>(plane));
  const __m512i channels_v = _mm512_set1_epi32(static_cast<int32_t>(channels));
  int64_t c = 0;
  for (; c + 16 <= channels; c += 16) {
    const __m512i index = _mm512_loadu_si512(idx + c);
    const __mmask16 in = _mm512_cmpge_epi32_mask(index, first_v) & _mm512_cmplt_epi32_mask(index, last_v);
    if (static_cast<__mmask16>(~in) & _mm512_cmpge_epi32_mask(index, plane_v)) break;
    if (in == 0) continue;
    const __m512i at = _mm512_add_epi32(_mm512_mullo_epi32(_mm512_sub_epi32(index, first_v), channels_v),
                                        _mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(c)), lanes));
    const __m512 sums = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), in, at, slab, 4);
    _mm512_mask_i32scatter_ps(slab, in, at, _mm512_add_ps(sums, _mm512_loadu_ps(go + c)), 4);
  }
  return c;
}
#endif

// channels_last: a task owns a slab of grad_input, rows [h0, h1) of one (n, d), small
// enough to stay in cache. It zeroes the slab, then walks the outputs whose windows reach
// those rows in increasing order and adds every gradient whose argmax falls in the slab.
template <typename scalar_t, typename index_t>
void backward_channels_last(const scalar_t* grad_output, const index_t* indices, scalar_t* grad_input,
                            const Geometry& g) {
  using acc_t = opmath_t<scalar_t>;
  constexpr int64_t kSlabElements = 65536;
  const Axis &ad = g.d(), &ah = g.h(), &aw = g.w();
  const int64_t channels = g.channels, plane = g.plane();
  const int64_t row_elements = aw.size * channels;
  const int64_t slab_rows = std::clamp<int64_t>(kSlabElements / row_elements, 1, ah.size);
  const int64_t slabs_per_d = (ah.size + slab_rows - 1) / slab_rows;
  const int64_t tasks = g.batch * ad.size * slabs_per_d;
  const int64_t work = slab_rows * row_elements * 2;
  // The vector path compares indices and addresses a slab in int32.
  [[maybe_unused]] const bool vector_offsets = slab_rows * row_elements <= INT32_MAX && plane <= INT32_MAX;
  at::parallel_for(0, tasks, grain_for(work), [&](int64_t begin, int64_t end) {
    GradientSums<scalar_t> slab_sums(slab_rows * row_elements);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t h0 = task % slabs_per_d * slab_rows, h1 = std::min(ah.size, h0 + slab_rows);
      const int64_t d = task / slabs_per_d % ad.size, n = task / (slabs_per_d * ad.size);
      // The slab holds flat positions [first, last) of the plane.
      const int64_t first = (d * ah.size + h0) * aw.size, last = (d * ah.size + h1) * aw.size;
      acc_t* slab = slab_sums.start(grad_input + (n * plane + first) * channels, (last - first) * channels);
      // Output rows whose windows reach rows [h0, h1).
      const int64_t oh_lo = std::max<int64_t>(
          0, (h0 + ah.before - (ah.kernel - 1) * ah.dilation + ah.stride - 1) / ah.stride);
      const int64_t oh_hi = std::min(ah.out, (h1 - 1 + ah.before) / ah.stride + 1);
      for (int64_t od = 0; od < ad.out; ++od) {
        const int64_t reach = d - ad.start(od);
        if (reach < 0 || reach > (ad.kernel - 1) * ad.dilation || reach % ad.dilation != 0) continue;
        for (int64_t oh = oh_lo; oh < oh_hi; ++oh) {
          const int64_t o = ((n * ad.out + od) * ah.out + oh) * aw.out * channels;
          const index_t* idx = indices + o;
          const scalar_t* go = grad_output + o;
          for (int64_t ow = 0; ow < aw.out; ++ow, idx += channels, go += channels) {
            int64_t c = 0;
#if defined(CPU_CAPABILITY_AVX512)
            if constexpr (std::is_same_v<scalar_t, float> && std::is_same_v<index_t, int32_t>) {
              if (vector_offsets) c = add_gradient_vectors(idx, go, slab, first, last, plane, channels);
            }
#endif
            for (; c < channels; ++c) {
              const int64_t index = idx[c];
              if (index < first || index >= last) {
                TORCH_CHECK(index < plane, "seqkern max_pool_backward: index ", index, " is outside a plane of ",
                            plane, " input elements");
                continue;
              }
              slab[(index - first) * channels + c] += static_cast<acc_t>(go[c]);
            }
          }
        }
      }
      slab_sums.finish();
    }
  });
}

}  // namespace

Tensor max_pool_backward(const Tensor& grad_output_arg, const Tensor& indices_arg, at::IntArrayRef input_size,
                         at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef dilation,
                         at::IntArrayRef padding) {
  TORCH_CHECK(grad_output_arg.device().is_cpu() && indices_arg.device().is_cpu(),
              "seqkern max_pool_backward (C++): grad_output and indices must be CPU tensors");
  check_backward_arguments(grad_output_arg, indices_arg, input_size, kernel_size, stride, dilation, padding);
  const int64_t dims = grad_output_arg.dim();
  const int64_t spatial = dims - 2;
  Geometry g;
  set_axes(g, input_size, kernel_size, stride, dilation, padding);
  for (int64_t i = 0; i < spatial; ++i) g.axis[3 - spatial + i].out = grad_output_arg.size(2 + i);
  const auto format = dims >= 4 ? indices_arg.suggest_memory_format() : at::MemoryFormat::Contiguous;
  g.channels_last = format != at::MemoryFormat::Contiguous;
  const Tensor grad_output = grad_output_arg.contiguous(format);
  const Tensor indices = indices_arg.contiguous(format);
  Tensor grad_input = empty_large(input_size, grad_output.options().memory_format(format));
  if (grad_input.numel() == 0) return grad_input;
  if (grad_output.numel() == 0) return grad_input.zero_();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, grad_output.scalar_type(), "max_pool_backward", [&] {
    const scalar_t* go = grad_output.const_data_ptr<scalar_t>();
    scalar_t* gi = grad_input.mutable_data_ptr<scalar_t>();
    auto scatter = [&](const auto* idx) {
      using index_t = std::remove_const_t<std::remove_pointer_t<decltype(idx)>>;
      if (g.channels_last) {
        backward_channels_last<scalar_t, index_t>(go, idx, gi, g);
      } else {
        backward_contiguous<scalar_t, index_t>(go, idx, gi, g);
      }
    };
    if (indices.scalar_type() == at::kLong) {
      scatter(indices.const_data_ptr<int64_t>());
    } else {
      scatter(indices.const_data_ptr<int32_t>());
    }
  });
  return grad_input;
}

namespace {

// The backends' contract takes padding as (before, after) pairs; the kernels, as the op, flat.
std::vector<int64_t> flat_padding(const Padding& pairs) {
  std::vector<int64_t> flat;
  for (const auto& [before, after] : pairs) {
    flat.push_back(before);
    flat.push_back(after);
  }
  return flat;
}

}  // namespace

void register_pooling(pybind11::module_& module) {
  namespace py = pybind11;
  module.def(
      "max_pool_forward",
      [](const Tensor& input, const std::vector<int64_t>& kernel_size, const std::vector<int64_t>& stride,
         const std::vector<int64_t>& dilation, const Padding& padding, bool ceil_mode, double pad_value,
         std::optional<at::ScalarType> index_dtype) {
        return max_pool_forward(input, kernel_size, stride, dilation, flat_padding(padding), ceil_mode, pad_value,
                                index_dtype);
      },
      py::call_guard<py::gil_scoped_release>(),
      "Max pool 1d/2d/3d forward -> (output, indices); indices are (0,) when index_dtype is None.",
      py::arg("input"), py::arg("kernel_size"), py::arg("stride"), py::arg("dilation"), py::arg("padding"),
      py::arg("ceil_mode"), py::arg("pad_value"), py::arg("index_dtype"));
  module.def(
      "max_pool_backward",
      [](const Tensor& grad_output, const Tensor& indices, const std::vector<int64_t>& input_size,
         const std::vector<int64_t>& kernel_size, const std::vector<int64_t>& stride,
         const std::vector<int64_t>& dilation, const Padding& padding) {
        return max_pool_backward(grad_output, indices, input_size, kernel_size, stride, dilation,
                                 flat_padding(padding));
      },
      py::call_guard<py::gil_scoped_release>(),
      "Max pool backward: grad_output added into the argmax positions -> grad_input.", py::arg("grad_output"),
      py::arg("indices"), py::arg("input_size"), py::arg("kernel_size"), py::arg("stride"), py::arg("dilation"),
      py::arg("padding"));
}

}  // namespace seqkern
