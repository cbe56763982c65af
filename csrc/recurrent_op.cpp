// The recurrent layer as torch.library ops: schemas, the CPU kernels and autograd, all in
// C++ so that a call from seqkern.functional crosses into Python nowhere (the Python
// custom-op machinery cost more per training step than the whole kernel at small shapes).
//
//   seqkern::recurrent_layer           forward of one layer, one direction (contract and
//                                      workspace layout: seqkern/ops/recurrent.py)
//   seqkern::recurrent_layer_backward  its BPTT; differentiating it again raises
//   seqkern::recurrent_cell            one step (B, I) -> (h', c'), the layer op at T = 1
//
// Other pieces live in Python, seqkern/ops/recurrent.py: the fake (meta) kernels for
// torch.compile, the CUDA kernels (Triton), and the backend override: when
// SEQKERN_BACKEND is set, the CPU kernels hand the call to a Python function that picks the
// backend (seqkern/_backend.py is the one place that chooses).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <cstdlib>
#include <string>

#include "seqkern.h"

namespace seqkern {
namespace {

using at::Tensor;
using OptionalTensor = std::optional<Tensor>;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using LayerOutputs = std::tuple<Tensor, Tensor, Tensor, Tensor>;

using ForwardSignature = LayerOutputs(const Tensor&, const Tensor&, const OptionalTensor&, const Tensor&,
                                      const Tensor&, const OptionalTensor&, const OptionalTensor&,
                                      const OptionalTensor&, const OptionalTensor&, const OptionalTensor&,
                                      c10::string_view, bool);
using BackwardSignature = RecurrentGrads(const Tensor&, const Tensor&, const OptionalTensor&, const Tensor&,
                                         const Tensor&, const OptionalTensor&, const Tensor&, const Tensor&,
                                         const OptionalTensor&, const OptionalTensor&, const OptionalTensor&,
                                         const OptionalTensor&, const OptionalTensor&, const Tensor&, const Tensor&,
                                         c10::string_view, bool, bool, bool);


LayerOutputs forward_cpu(const Tensor& input, const Tensor& h0, const OptionalTensor& c0, const Tensor& w_ih,
                         const Tensor& w_hh, const OptionalTensor& b_ih, const OptionalTensor& b_hh,
                         const OptionalTensor& w_hr, const OptionalTensor& w_peep, const OptionalTensor& lengths,
                         c10::string_view cell, bool reverse) {
  if (backend_overridden()) {
    pybind11::gil_scoped_acquire gil;
    return recurrent_override.forward()(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, lengths,
                                        std::string(cell), reverse)
        .cast<LayerOutputs>();
  }
  return recurrent_layer_forward(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, lengths, std::string(cell),
                                 reverse);
}

RecurrentGrads backward_cpu(const Tensor& grad_output, const Tensor& grad_h_n, const OptionalTensor& grad_c_n,
                            const Tensor& input, const Tensor& h0, const OptionalTensor& c0, const Tensor& w_ih,
                            const Tensor& w_hh, const OptionalTensor& b_ih, const OptionalTensor& b_hh,
                            const OptionalTensor& w_hr, const OptionalTensor& w_peep, const OptionalTensor& lengths,
                            const Tensor& output, const Tensor& workspace, c10::string_view cell, bool reverse,
                            bool need_input_grad, bool need_weight_grad) {
  if (backend_overridden()) {
    pybind11::gil_scoped_acquire gil;
    return recurrent_override.backward()(grad_output, grad_h_n, grad_c_n, input, h0, c0, w_ih, w_hh, b_ih, b_hh,
                                         w_hr, w_peep, lengths, output, workspace, std::string(cell), reverse,
                                         need_input_grad, need_weight_grad)
        .cast<RecurrentGrads>();
  }
  return recurrent_layer_backward(grad_output, grad_h_n, grad_c_n, input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                                  w_peep, lengths, output, workspace, std::string(cell), reverse, need_input_grad,
                                  need_weight_grad);
}

// Calls through the dispatcher, so that the kernel for the tensors' device runs (C++ on CPU,
// Triton on CUDA, registered from Python).
const c10::TypedOperatorHandle<ForwardSignature>& forward_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("seqkern::recurrent_layer", "").typed<ForwardSignature>();
  return op;
}

const c10::TypedOperatorHandle<BackwardSignature>& backward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("seqkern::recurrent_layer_backward", "")
                             .typed<BackwardSignature>();
  return op;
}

variable_list as_list(const RecurrentGrads& grads) {
  return std::apply([](const auto&... grad) { return variable_list{grad...}; }, grads);
}

OptionalTensor present(const Tensor& tensor) { return tensor.defined() ? OptionalTensor(tensor) : std::nullopt; }

// Forward arguments in schema order; the optional ones may be undefined.
enum Argument { kInput, kH0, kC0, kWIh, kWHh, kBIh, kBHh, kWHr, kWPeep, kLengths, kTensorArguments };

class RecurrentLayerFunction : public torch::autograd::Function<RecurrentLayerFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& input, const Tensor& h0, const OptionalTensor& c0,
                               const Tensor& w_ih, const Tensor& w_hh, const OptionalTensor& b_ih,
                               const OptionalTensor& b_hh, const OptionalTensor& w_hr, const OptionalTensor& w_peep,
                               const OptionalTensor& lengths, c10::string_view cell, bool reverse) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [output, h_n, c_n, workspace] =
        forward_op().call(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, lengths, cell, reverse);
    ctx->saved_data["cell"] = std::string(cell);
    ctx->saved_data["reverse"] = reverse;
    auto none = Tensor();
    ctx->save_for_backward({input, h0, c0.value_or(none), w_ih, w_hh, b_ih.value_or(none), b_hh.value_or(none),
                            w_hr.value_or(none), w_peep.value_or(none), lengths.value_or(none), output, workspace});
    ctx->mark_non_differentiable({workspace});
    // Unused output gradients stay undefined: backward makes the zeros it needs and never
    // pays for a (T, B, W) zero gradient of the workspace.
    ctx->set_materialize_grads(false);
    return {output, h_n, c_n, workspace};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const Tensor& output = saved[kTensorArguments];
    const Tensor& workspace = saved[kTensorArguments + 1];
    // needs_input_grad counts only the tensors that were given, in argument order.
    bool needs[kTensorArguments] = {};
    for (int argument = 0, edge = 0; argument < kTensorArguments; ++argument) {
      if (saved[argument].defined()) {
        needs[argument] = ctx->needs_input_grad(edge++);
      }
    }
    const bool need_weight_grad = needs[kWIh] || needs[kWHh] || needs[kBIh] || needs[kBHh] || needs[kWHr] ||
                                  needs[kWPeep];
    const Tensor& c0 = saved[kC0];
    // As it comes (output.sum() gives an expanded scalar): each backend makes it contiguous, the
    // CPU one into a cached block.
    const Tensor grad_output = grads[0].defined() ? grads[0] : at::zeros_like(output);
    const Tensor grad_h_n = grads[1].defined() ? grads[1].contiguous() : at::zeros_like(saved[kH0]);
    OptionalTensor grad_c_n;
    if (c0.defined()) {
      grad_c_n = grads[2].defined() ? grads[2].contiguous() : at::zeros_like(c0);
    }
    const auto cell = ctx->saved_data["cell"].toStringRef();
    const RecurrentGrads result = backward_op().call(
        grad_output, grad_h_n, grad_c_n, saved[kInput], saved[kH0], present(c0), saved[kWIh], saved[kWHh],
        present(saved[kBIh]), present(saved[kBHh]), present(saved[kWHr]), present(saved[kWPeep]),
        present(saved[kLengths]), output, workspace, cell, ctx->saved_data["reverse"].toBool(), needs[kInput],
        need_weight_grad);
    const variable_list computed = as_list(result);
    variable_list grad_inputs(kTensorArguments + 2);  // + cell, reverse
    for (int argument = 0; argument < kLengths; ++argument) {
      if (needs[argument]) {
        grad_inputs[argument] = computed[argument];
      }
    }
    return grad_inputs;
  }
};

// Whether a tensor needs an op's autograd Function: a gradient to track (in grad mode), or a
// forward-mode tangent, which the Function rejects (without it the tangent would be dropped).
bool tracked(bool grad_mode, const Tensor& tensor) {
  return tensor.defined() && ((grad_mode && tensor.requires_grad()) || tensor._fw_grad(0).defined());
}

bool tracked(bool grad_mode, const OptionalTensor& tensor) { return tensor && tracked(grad_mode, *tensor); }

template <typename... Tensors>
bool needs_autograd(const Tensors&... tensors) {
  const bool grad_mode = at::GradMode::is_enabled();
  return (tracked(grad_mode, tensors) || ...);
}

LayerOutputs forward_autograd(const Tensor& input, const Tensor& h0, const OptionalTensor& c0, const Tensor& w_ih,
                              const Tensor& w_hh, const OptionalTensor& b_ih, const OptionalTensor& b_hh,
                              const OptionalTensor& w_hr, const OptionalTensor& w_peep,
                              const OptionalTensor& lengths, c10::string_view cell, bool reverse) {
  // Without a gradient to track, the Function's graph node, saved tensors and output wrapping
  // are a tenth of a cell step; its outputs would not require grad anyway.
  if (!needs_autograd(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep)) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return forward_op().call(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, lengths, cell, reverse);
  }
  const variable_list outputs =
      RecurrentLayerFunction::apply(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, lengths, cell, reverse);
  return {outputs[0], outputs[1], outputs[2], outputs[3]};
}

// Differentiating the backward would need second derivatives of every gate; say so
// instead of returning zeros.
class RecurrentLayerBackwardFunction : public torch::autograd::Function<RecurrentLayerBackwardFunction> {
 public:
  static variable_list forward(AutogradContext*, const Tensor& grad_output, const Tensor& grad_h_n,
                               const OptionalTensor& grad_c_n, const Tensor& input, const Tensor& h0,
                               const OptionalTensor& c0, const Tensor& w_ih, const Tensor& w_hh,
                               const OptionalTensor& b_ih, const OptionalTensor& b_hh, const OptionalTensor& w_hr,
                               const OptionalTensor& w_peep, const OptionalTensor& lengths, const Tensor& output,
                               const Tensor& workspace, c10::string_view cell, bool reverse, bool need_input_grad,
                               bool need_weight_grad) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    const RecurrentGrads grads =
        backward_op().call(grad_output, grad_h_n, grad_c_n, input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep,
                           lengths, output, workspace, cell, reverse, need_input_grad, need_weight_grad);
    return as_list(grads);
  }

  static variable_list backward(AutogradContext*, variable_list) {
    TORCH_CHECK(false,
                "seqkern recurrent layers do not support double backward (gradients of gradients); "
                "use torch.nn for create_graph=True / gradgradcheck");
  }
};

RecurrentGrads backward_autograd(const Tensor& grad_output, const Tensor& grad_h_n, const OptionalTensor& grad_c_n,
                                 const Tensor& input, const Tensor& h0, const OptionalTensor& c0, const Tensor& w_ih,
                                 const Tensor& w_hh, const OptionalTensor& b_ih, const OptionalTensor& b_hh,
                                 const OptionalTensor& w_hr, const OptionalTensor& w_peep,
                                 const OptionalTensor& lengths, const Tensor& output, const Tensor& workspace,
                                 c10::string_view cell, bool reverse, bool need_input_grad, bool need_weight_grad) {
  // Outside create_graph=True (every usual backward), no node that could only raise.
  if (!needs_autograd(grad_output, grad_h_n, grad_c_n, input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, output,
                      workspace)) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return backward_op().call(grad_output, grad_h_n, grad_c_n, input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep,
                              lengths, output, workspace, cell, reverse, need_input_grad, need_weight_grad);
  }
  const variable_list grads = RecurrentLayerBackwardFunction::apply(
      grad_output, grad_h_n, grad_c_n, input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, lengths, output,
      workspace, cell, reverse, need_input_grad, need_weight_grad);
  return {grads[0], grads[1], grads[2], grads[3], grads[4], grads[5], grads[6], grads[7], grads[8]};
}

// One step of a cell: the layer op at T = 1, so that the step has the same fused kernels,
// autograd, fake and CUDA kernels and backend override as the layer, with nothing to keep in
// sync. Registered as CompositeImplicitAutograd: torch.compile sees the layer op.
std::tuple<Tensor, Tensor> cell_step(const Tensor& input, const Tensor& h, const OptionalTensor& c,
                                     const Tensor& w_ih, const Tensor& w_hh, const OptionalTensor& b_ih,
                                     const OptionalTensor& b_hh, const OptionalTensor& w_peep, c10::string_view cell) {
  TORCH_CHECK_VALUE(input.dim() == 2, "seqkern recurrent cell: input must be 2-D (B, I), got ", input.dim(), "-D");
  const auto contiguous = [](const OptionalTensor& tensor) -> OptionalTensor {
    return tensor ? OptionalTensor(tensor->contiguous()) : std::nullopt;
  };
  const auto [output, h_n, c_n, workspace] =
      forward_op().call(input.unsqueeze(0).contiguous(), h.contiguous(), contiguous(c), w_ih.contiguous(),
                        w_hh.contiguous(), contiguous(b_ih), contiguous(b_hh), std::nullopt, contiguous(w_peep),
                        std::nullopt, cell, false);
  return {h_n, c_n};
}

}  // namespace

BackendOverride recurrent_override("seqkern.ops.recurrent");

bool backend_overridden() {
  const char* value = std::getenv("SEQKERN_BACKEND");
  return value != nullptr && value[0] != '\0';
}

pybind11::object& BackendOverride::checked(pybind11::object* function) const {
  TORCH_CHECK(function != nullptr, "SEQKERN_BACKEND is set, but ", module_,
              " has not registered its backend override; import seqkern before calling torch.ops.seqkern");
  return *function;
}

void BackendOverride::register_setter(pybind11::module_& extension, const char* name) {
  extension.def(
      name,
      [this](pybind11::object forward, pybind11::object backward) {
        delete forward_;
        delete backward_;
        forward_ = new pybind11::object(std::move(forward));
        backward_ = new pybind11::object(std::move(backward));
      },
      "Set the Python functions (forward, backward) that run this op family on CPU tensors while "
      "SEQKERN_BACKEND is set (its module in seqkern/ops does this on import)");
}

}  // namespace seqkern

TORCH_LIBRARY(seqkern, m) {
  m.def(
      "recurrent_layer(Tensor input, Tensor h0, Tensor? c0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
      "Tensor? w_hr, Tensor? w_peep, Tensor? lengths, str cell, bool reverse) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "recurrent_layer_backward(Tensor grad_output, Tensor grad_h_n, Tensor? grad_c_n, Tensor input, Tensor h0, "
      "Tensor? c0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor? w_hr, Tensor? w_peep, "
      "Tensor? lengths, Tensor output, Tensor workspace, str cell, bool reverse, bool need_input_grad, "
      "bool need_weight_grad) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "recurrent_cell(Tensor input, Tensor h, Tensor? c, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
      "Tensor? w_peep, str cell) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(seqkern, CompositeImplicitAutograd, m) { m.impl("recurrent_cell", &seqkern::cell_step); }

TORCH_LIBRARY_IMPL(seqkern, CPU, m) {
  m.impl("recurrent_layer", &seqkern::forward_cpu);
  m.impl("recurrent_layer_backward", &seqkern::backward_cpu);
}

TORCH_LIBRARY_IMPL(seqkern, Autograd, m) {
  m.impl("recurrent_layer", &seqkern::forward_autograd);
  m.impl("recurrent_layer_backward", &seqkern::backward_autograd);
}
