// Max pooling as torch.library ops: schemas, the CPU kernels and autograd, in C++ like the
// recurrent ops (recurrent_op.cpp), so that a pool on CPU crosses into Python nowhere: as a
// Python custom op it took 27 us a forward and 116 a training step on a (1, 3, 8, 8) input
// whose kernel runs in 2 us; 6 and 43 now (2 threads, this project's Zen 5 machine).
//
//   seqkern::max_pool           forward, with int64 / int32 argmax indices or none
//   seqkern::max_pool_backward  adds each output gradient into its argmax; its own
//                               gradient (double backward) gathers at the argmax
//
// Contracts (arguments, index semantics, layouts): seqkern/ops/pooling.py, which also
// registers the fake kernels, the CUDA kernels (Triton) and the function that the CPU
// kernels hand over to while SEQKERN_BACKEND is set. The argument checks here say what the
// Python ones (check_pool_arguments) say.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <sstream>

#include "seqkern.h"

namespace seqkern {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using Sizes = c10::SymIntArrayRef;
using PoolOutputs = std::tuple<Tensor, Tensor>;
using ForwardSignature = PoolOutputs(const Tensor&, Sizes, Sizes, Sizes, Sizes, bool, double,
                                     std::optional<at::ScalarType>);
using BackwardSignature = Tensor(const Tensor&, const Tensor&, Sizes, Sizes, Sizes, Sizes, Sizes, bool);

// Python's str() of a list of ints, as the Python checks print them.
std::string python_list(at::IntArrayRef values) {
  std::ostringstream text;
  text << "[";
  for (size_t i = 0; i < values.size(); ++i) {
    text << (i ? ", " : "") << values[i];
  }
  text << "]";
  return text.str();
}

// Python's str() of a tuple of ints: "(3,)" for one.
std::string python_tuple(at::IntArrayRef values) {
  std::string list = python_list(values);
  return "(" + list.substr(1, list.size() - 2) + (values.size() == 1 ? ",)" : ")");
}

std::vector<std::pair<int64_t, int64_t>> padding_pairs(at::IntArrayRef padding) {
  std::vector<std::pair<int64_t, int64_t>> pairs;
  for (size_t i = 0; i + 1 < padding.size(); i += 2) {
    pairs.emplace_back(padding[i], padding[i + 1]);
  }
  return pairs;
}

// Python's str() of a dtype ("torch.int16").
std::string python_dtype(at::ScalarType dtype) { return "torch." + std::string(c10::getDtypeNames(dtype).first); }

// Python's str() of a float: integral values keep a ".0".
std::string python_float(double value) {
  std::ostringstream text;
  text << value;
  if (std::isfinite(value) && value == std::trunc(value) && std::fabs(value) < 1e16) {
    text << ".0";
  }
  return text.str();
}

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

void check_pool_arguments(const Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                          at::IntArrayRef dilation, at::IntArrayRef padding, bool ceil_mode, double pad_value,
                          std::optional<at::ScalarType> index_dtype) {
  const int64_t spatial = input.dim() - 2;
  TORCH_CHECK_VALUE(spatial >= 1 && spatial <= 3,
                    "seqkern max_pool: input must be (N, C, *S) with 1 to 3 spatial axes, got shape ",
                    python_tuple(input.sizes()));
  TORCH_CHECK_NOT_IMPLEMENTED(supported_dtype(input.scalar_type()), "seqkern max_pool: dtype ",
                              python_dtype(input.scalar_type()), " is not supported");
  const std::pair<const char*, at::IntArrayRef> counted[] = {
      {"kernel_size", kernel_size}, {"stride", stride}, {"dilation", dilation}, {"padding", padding}};
  for (const auto& [name, values] : counted) {
    const int64_t wanted = std::string(name) == "padding" ? 2 * spatial : spatial;
    TORCH_CHECK_VALUE(static_cast<int64_t>(values.size()) == wanted, "seqkern max_pool: ", name, " needs ", wanted,
                      " entries for a ", spatial, "-d pool, got ", python_list(values));
  }
  for (const auto& [name, values] : {counted[0], counted[1], counted[2]}) {
    for (const int64_t value : values) {
      TORCH_CHECK_VALUE(value >= 1, "seqkern max_pool: ", name, " must be positive, got ", python_list(values));
    }
  }
  for (const int64_t side : padding) {
    TORCH_CHECK_VALUE(side >= 0, "seqkern max_pool: padding must be non-negative, got ", python_list(padding));
  }
  for (int64_t axis = 0; axis < spatial; ++axis) {
    TORCH_CHECK_VALUE(input.size(2 + axis) >= 1, "seqkern max_pool: spatial sizes must be positive, got shape ",
                      python_tuple(input.sizes()));
  }
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

at::MemoryFormat layout_of(const Tensor& tensor) {
  return tensor.dim() >= 4 ? tensor.suggest_memory_format() : at::MemoryFormat::Contiguous;
}

at::MemoryFormat layout_for(int64_t rank, bool channels_last) {
  if (!channels_last) {
    return at::MemoryFormat::Contiguous;
  }
  return rank == 4 ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::ChannelsLast3d;
}

PoolOutputs max_pool_cpu(const Tensor& input, Sizes kernel_size, Sizes stride, Sizes dilation, Sizes padding,
                         bool ceil_mode, double pad_value, std::optional<at::ScalarType> index_dtype) {
  const auto kernel = C10_AS_INTARRAYREF_SLOW(kernel_size), steps = C10_AS_INTARRAYREF_SLOW(stride);
  const auto dilations = C10_AS_INTARRAYREF_SLOW(dilation), sides = C10_AS_INTARRAYREF_SLOW(padding);
  if (backend_overridden()) {
    pybind11::gil_scoped_acquire gil;
    return pooling_override
        .forward()(input, kernel.vec(), steps.vec(), dilations.vec(), sides.vec(), ceil_mode, pad_value, index_dtype)
        .cast<PoolOutputs>();
  }
  check_pool_arguments(input, kernel, steps, dilations, sides, ceil_mode, pad_value, index_dtype);
  const auto layout = layout_of(input);
  auto [output, indices] = max_pool_forward(input.contiguous(layout), kernel.vec(), steps.vec(), dilations.vec(),
                                            padding_pairs(sides), ceil_mode, pad_value, index_dtype);
  return {output.contiguous(layout), index_dtype ? indices.contiguous(layout) : indices};
}

void check_backward_arguments(const Tensor& grad_output, const Tensor& indices, at::IntArrayRef input_size) {
  TORCH_CHECK_VALUE(indices.sizes() == grad_output.sizes(), "seqkern max_pool_backward: indices of shape ",
                    python_tuple(indices.sizes()), " do not match grad_output of shape ",
                    python_tuple(grad_output.sizes()));
  TORCH_CHECK_VALUE(indices.scalar_type() == at::kLong || indices.scalar_type() == at::kInt,
                    "seqkern max_pool_backward: indices must be int64 or int32, got ",
                    python_dtype(indices.scalar_type()));
  TORCH_CHECK_VALUE(static_cast<int64_t>(input_size.size()) == grad_output.dim() && grad_output.dim() >= 2 &&
                        input_size[0] == grad_output.size(0) && input_size[1] == grad_output.size(1),
                    "seqkern max_pool_backward: input_size ", python_list(input_size),
                    " does not match grad_output of shape ", python_tuple(grad_output.sizes()),
                    " in rank, batch and channels");
}

Tensor max_pool_backward_cpu(const Tensor& grad_output, const Tensor& indices, Sizes input_size, Sizes kernel_size,
                             Sizes stride, Sizes dilation, Sizes padding, bool channels_last) {
  const auto sizes = C10_AS_INTARRAYREF_SLOW(input_size), kernel = C10_AS_INTARRAYREF_SLOW(kernel_size);
  const auto steps = C10_AS_INTARRAYREF_SLOW(stride), dilations = C10_AS_INTARRAYREF_SLOW(dilation);
  const auto sides = C10_AS_INTARRAYREF_SLOW(padding);
  if (backend_overridden()) {
    pybind11::gil_scoped_acquire gil;
    return pooling_override
        .backward()(grad_output, indices, sizes.vec(), kernel.vec(), steps.vec(), dilations.vec(), sides.vec(),
                    channels_last)
        .cast<Tensor>();
  }
  check_backward_arguments(grad_output, indices, sizes);
  const auto layout = layout_for(static_cast<int64_t>(sizes.size()), channels_last);
  return max_pool_backward(grad_output.contiguous(layout), indices.contiguous(layout), sizes.vec(), kernel.vec(),
                           steps.vec(), dilations.vec(), padding_pairs(sides))
      .contiguous(layout);
}

// Calls through the dispatcher, so that the kernel for the tensors' device runs.
const c10::TypedOperatorHandle<ForwardSignature>& forward_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("seqkern::max_pool", "").typed<ForwardSignature>();
  return op;
}

const c10::TypedOperatorHandle<BackwardSignature>& backward_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("seqkern::max_pool_backward", "").typed<BackwardSignature>();
  return op;
}

// The window geometry in saved_data, as symbolic sizes (torch.compile traces with them).
void save_sizes(AutogradContext* ctx, const char* name, Sizes sizes) { ctx->saved_data[name] = sizes; }

std::vector<c10::SymInt> saved_sizes(AutogradContext* ctx, const char* name) {
  return ctx->saved_data[name].toSymIntVector();
}

// values (N, C, *S_in) at each window's argmax -> (N, C, *S_out); zero where the index is -1 (the
// maximum was a padded position). Both the tangent of max_pool (forward-mode AD) and the
// gradient of max_pool_backward, which is linear in grad_output.
Tensor gather_at_argmax(const Tensor& values, const Tensor& indices) {
  const Tensor flat_indices = indices.flatten(2).to(at::kLong);
  const Tensor gathered = values.flatten(2).gather(2, flat_indices.clamp_min(0));
  return at::where(flat_indices >= 0, gathered, at::zeros_like(gathered)).reshape_symint(indices.sym_sizes());
}

class MaxPoolBackwardFunction : public torch::autograd::Function<MaxPoolBackwardFunction> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& grad_output, const Tensor& indices, Sizes input_size,
                        Sizes kernel_size, Sizes stride, Sizes dilation, Sizes padding, bool channels_last) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    ctx->save_for_backward({indices});
    return backward_op().call(grad_output, indices, input_size, kernel_size, stride, dilation, padding,
                              channels_last);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {gather_at_argmax(grads[0], ctx->get_saved_variables()[0]), Tensor(), Tensor(), Tensor(), Tensor(),
            Tensor(), Tensor(), Tensor()};
  }
};

class MaxPoolFunction : public torch::autograd::Function<MaxPoolFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& input, Sizes kernel_size, Sizes stride,
                               Sizes dilation, Sizes padding, bool ceil_mode, double pad_value,
                               std::optional<at::ScalarType> index_dtype) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [output, indices] =
        forward_op().call(input, kernel_size, stride, dilation, padding, ceil_mode, pad_value, index_dtype);
    save_sizes(ctx, "input_size", input.sym_sizes());
    save_sizes(ctx, "kernel_size", kernel_size);
    save_sizes(ctx, "stride", stride);
    save_sizes(ctx, "dilation", dilation);
    save_sizes(ctx, "padding", padding);
    ctx->saved_data["channels_last"] = layout_of(input) != at::MemoryFormat::Contiguous;
    ctx->save_for_backward({indices});
    ctx->mark_non_differentiable({indices});
    // Otherwise autograd fills a zero gradient for the indices on every backward.
    ctx->set_materialize_grads(false);
    return {output, indices};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list grad_inputs(8);
    if (grads[0].defined()) {
      grad_inputs[0] = MaxPoolBackwardFunction::apply(
          grads[0], ctx->get_saved_variables()[0], saved_sizes(ctx, "input_size"), saved_sizes(ctx, "kernel_size"),
          saved_sizes(ctx, "stride"), saved_sizes(ctx, "dilation"), saved_sizes(ctx, "padding"),
          ctx->saved_data["channels_last"].toBool());
    }
    return grad_inputs;
  }
};

PoolOutputs max_pool_autograd(const Tensor& input, Sizes kernel_size, Sizes stride, Sizes dilation, Sizes padding,
                              bool ceil_mode, double pad_value, std::optional<at::ScalarType> index_dtype) {
  const Tensor tangent = input._fw_grad(/*level=*/0);
  if (tangent.defined()) {
    // Forward-mode AD (torch's max pools have it): a C++ autograd Function cannot carry a
    // tangent, so the pool runs on the primal (still tracked for backward) and its output gets
    // the input's tangent at the argmax, which takes indices even where the caller wants none.
    auto [output, indices] = max_pool_autograd(input._fw_primal(0), kernel_size, stride, dilation, padding, ceil_mode,
                                               pad_value, index_dtype.value_or(at::kLong));
    output._set_fw_grad(gather_at_argmax(tangent, indices), /*level=*/0, /*is_inplace_op=*/false);
    return {output, index_dtype ? indices : at::empty({0}, input.options().dtype(at::kLong))};
  }
  TORCH_CHECK(index_dtype.has_value() || !(input.requires_grad() && at::GradMode::is_enabled()),
              "seqkern::max_pool was called with index_dtype=None on an input that requires grad; its output "
              "would have no gradient. Pass index_dtype=torch.int32 or torch.int64.");
  if (!(input.requires_grad() && at::GradMode::is_enabled())) {
    // Inference: no graph node to build.
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return forward_op().call(input, kernel_size, stride, dilation, padding, ceil_mode, pad_value, index_dtype);
  }
  const variable_list outputs =
      MaxPoolFunction::apply(input, kernel_size, stride, dilation, padding, ceil_mode, pad_value, index_dtype);
  return {outputs[0], outputs[1]};
}

Tensor max_pool_backward_autograd(const Tensor& grad_output, const Tensor& indices, Sizes input_size,
                                  Sizes kernel_size, Sizes stride, Sizes dilation, Sizes padding, bool channels_last) {
  return MaxPoolBackwardFunction::apply(grad_output, indices, input_size, kernel_size, stride, dilation, padding,
                                        channels_last);
}

}  // namespace

BackendOverride pooling_override("seqkern.ops.pooling");

}  // namespace seqkern

TORCH_LIBRARY_FRAGMENT(seqkern, m) {
  m.def(
      "max_pool(Tensor input, SymInt[] kernel_size, SymInt[] stride, SymInt[] dilation, SymInt[] padding, "
      "bool ceil_mode, float pad_value, ScalarType? index_dtype) -> (Tensor, Tensor)");
  m.def(
      "max_pool_backward(Tensor grad_output, Tensor indices, SymInt[] input_size, SymInt[] kernel_size, "
      "SymInt[] stride, SymInt[] dilation, SymInt[] padding, bool channels_last) -> Tensor");
}

TORCH_LIBRARY_IMPL(seqkern, CPU, m) {
  m.impl("max_pool", &seqkern::max_pool_cpu);
  m.impl("max_pool_backward", &seqkern::max_pool_backward_cpu);
}

TORCH_LIBRARY_IMPL(seqkern, Autograd, m) {
  m.impl("max_pool", &seqkern::max_pool_autograd);
  m.impl("max_pool_backward", &seqkern::max_pool_backward_autograd);
}
