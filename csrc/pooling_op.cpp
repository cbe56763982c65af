// Max pooling as torch.library ops: schemas, the CPU kernels and autograd, in C++ like the
// recurrent ops (recurrent_op.cpp), so that a pool on CPU crosses into Python nowhere: as a
// Python custom op it took 27 us a forward and 116 a training step on a (1, 3, 8, 8) input
// whose kernel runs in 2 us; 6 and 43 now (2 threads, this project's Zen 5 machine).
//
//   seqkern::max_pool           forward, with int64 / int32 argmax indices or none
//   seqkern::max_pool_backward  adds each output gradient into its argmax; its own
//                               gradient (double backward) gathers at the argmax
//
// Forward-mode tangents and functorch transforms, which the autograd Function cannot carry,
// gather at the kernel's argmax in ATen ops.
//
// Contracts (arguments, index semantics, layouts): seqkern/ops/pooling.py, which also
// registers the fake kernels, the CUDA kernels (Triton) and the function that the CPU
// kernels hand over to while SEQKERN_BACKEND is set. The kernels (pooling.cpp) check their
// arguments as the Python path does, with the same exception types and messages.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

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
  const auto layout = layout_of(input);
  auto [output, indices] =
      max_pool_forward(input.contiguous(layout), kernel, steps, dilations, sides, ceil_mode, pad_value, index_dtype);
  return {output.contiguous(layout), index_dtype ? indices.contiguous(layout) : indices};
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
  const auto layout = layout_for(static_cast<int64_t>(sizes.size()), channels_last);
  return max_pool_backward(grad_output.contiguous(layout), indices.contiguous(layout), sizes, kernel, steps,
                           dilations, sides)
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

// The window geometry in saved_data as one list of symbolic sizes (torch.compile traces with
// them): input_size (k + 2), kernel_size, stride, dilation (k each), padding (2k) for a
// k-d pool. One entry, since each costs a hash-map insert and a copy out again, a tenth of a
// small pool's training step.
void save_geometry(AutogradContext* ctx, Sizes input_size, Sizes kernel_size, Sizes stride, Sizes dilation,
                   Sizes padding) {
  std::vector<c10::SymInt> geometry;
  geometry.reserve(input_size.size() + 3 * kernel_size.size() + padding.size());
  for (const Sizes part : {input_size, kernel_size, stride, dilation, padding}) {
    geometry.insert(geometry.end(), part.begin(), part.end());
  }
  ctx->saved_data["geometry"] = std::move(geometry);
}

// values (N, C, *S_in) at each window's argmax -> (N, C, *S_out); where the index is -1 (the
// maximum was a padded position), `padded` (N, C, *S_out), or zero without it. The tangent of
// max_pool (forward-mode AD), the gradient of max_pool_backward, which is linear in
// grad_output, and the pool itself under a functorch transform.
Tensor gather_at_argmax(const Tensor& values, const Tensor& indices, const Tensor& padded = Tensor()) {
  const Tensor flat_indices = indices.flatten(2).to(at::kLong);
  const Tensor gathered = values.flatten(2).gather(2, flat_indices.clamp_min(0));
  const Tensor fallback = padded.defined() ? padded.flatten(2) : at::zeros_like(gathered);
  return at::where(flat_indices >= 0, gathered, fallback).reshape_symint(indices.sym_sizes());
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
    save_geometry(ctx, input.sym_sizes(), kernel_size, stride, dilation, padding);
    ctx->saved_data["channels_last"] = layout_of(input) != at::MemoryFormat::Contiguous;
    ctx->save_for_backward({indices});
    ctx->mark_non_differentiable({indices});
    // Otherwise autograd fills a zero gradient for the indices on every backward.
    ctx->set_materialize_grads(false);
    return {output, indices};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list grad_inputs(8);
    if (!grads[0].defined()) {
      return grad_inputs;
    }
    const std::vector<c10::SymInt> geometry = ctx->saved_data["geometry"].toSymIntVector();
    const Sizes all(geometry);
    const size_t k = (all.size() - 2) / 6;
    const Sizes input_size = all.slice(0, k + 2), kernel_size = all.slice(k + 2, k),
                stride = all.slice(2 * k + 2, k), dilation = all.slice(3 * k + 2, k), padding = all.slice(4 * k + 2);
    grad_inputs[0] = backward_op().call(grads[0], ctx->get_saved_variables()[0], input_size, kernel_size, stride,
                                        dilation, padding, ctx->saved_data["channels_last"].toBool());
    return grad_inputs;
  }
};

PoolOutputs max_pool_autograd(const Tensor& input, Sizes kernel_size, Sizes stride, Sizes dilation, Sizes padding,
                              bool ceil_mode, double pad_value, std::optional<at::ScalarType> index_dtype) {
  if (functorch_transform_active()) {
    // The C++ Function raises under a functorch transform. The kernel finds each window's argmax
    // (piecewise constant: nothing to differentiate) and the output is the input gathered there,
    // in ATen ops that carry every transform; where the maximum was padding it is the kernel's
    // (a constant). The same numbers as the kernel's output.
    Tensor pooled, indices;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      std::tie(pooled, indices) = forward_op().call(input, kernel_size, stride, dilation, padding, ceil_mode,
                                                    pad_value, index_dtype.value_or(at::kLong));
    }
    return {gather_at_argmax(input, indices, pooled).contiguous(layout_of(input)),
            index_dtype ? indices : at::empty({0}, input.options().dtype(at::kLong))};
  }
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
  if (!(grad_output.requires_grad() && at::GradMode::is_enabled())) {
    // Outside create_graph=True (every usual backward): no node for a second derivative.
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return backward_op().call(grad_output, indices, input_size, kernel_size, stride, dilation, padding,
                              channels_last);
  }
  return MaxPoolBackwardFunction::apply(grad_output, indices, input_size, kernel_size, stride, dilation, padding,
                                        channels_last);
}

}  // namespace

BackendOverride pooling_override("seqkern.ops.pooling");

void register_pooling_op_calls(pybind11::module_& module) {
  namespace py = pybind11;
  module.def(
      "_max_pool_call",
      [](const Tensor& input, const std::vector<int64_t>& kernel_size, const std::vector<int64_t>& stride,
         const std::vector<int64_t>& dilation, const std::vector<int64_t>& padding, bool ceil_mode, double pad_value,
         std::optional<at::ScalarType> index_dtype) {
        return forward_op().call(input, c10::fromIntArrayRefSlow(kernel_size), c10::fromIntArrayRefSlow(stride),
                                 c10::fromIntArrayRefSlow(dilation), c10::fromIntArrayRefSlow(padding), ceil_mode,
                                 pad_value, index_dtype);
      },
      py::call_guard<py::gil_scoped_release>(),
      "seqkern::max_pool through the dispatcher, with the op's arguments in its order (positional only)");
}

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
