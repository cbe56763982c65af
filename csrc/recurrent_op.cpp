// The recurrent layer as torch.library ops: schemas, the CPU kernels and autograd, all in
// C++ so that a call from seqkern.functional crosses into Python nowhere (the Python
// custom-op machinery cost more per training step than the whole kernel at small shapes).
//
//   seqkern::recurrent_layer           forward of one layer, one direction (contract and
//                                      workspace layout: seqkern/ops/recurrent.py)
//   seqkern::recurrent_layer_backward  its BPTT
//   seqkern::recurrent_cell            one step (B, I) -> (h', c'), the layer op at T = 1
//
// What the kernels cannot do, forward-mode tangents, functorch transforms and second
// derivatives, goes through the layer written as ATen ops (layer_from_aten_ops).
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

// The layer as ATen ops, step by step, mirroring seqkern/reference.py: the path for what the
// kernels' autograd Function cannot carry, forward-mode tangents and functorch transforms
// (grad, vmap, jvp, jacrev, ...), since every ATen op has derivative formulas of all orders and
// a batching rule. A loop of small ops, at torch.nn's unfused speed. Reduced precision computes
// in float32, as the kernels do. Returns (output, h_n, c_n or undefined).
std::tuple<Tensor, Tensor, Tensor> layer_from_aten_ops(const Tensor& input, const Tensor& h0,
                                                       const OptionalTensor& c0, const Tensor& w_ih,
                                                       const Tensor& w_hh, const OptionalTensor& b_ih,
                                                       const OptionalTensor& b_hh, const OptionalTensor& w_hr,
                                                       const OptionalTensor& w_peep,
                                                       const OptionalTensor& lengths, c10::string_view cell,
                                                       bool reverse) {
  const at::ScalarType dtype = input.scalar_type();
  const at::ScalarType math_dtype = at::isReducedFloatingType(dtype) ? at::kFloat : dtype;
  const auto widen = [math_dtype](const OptionalTensor& tensor) -> OptionalTensor {
    return tensor ? OptionalTensor(tensor->to(math_dtype)) : std::nullopt;
  };
  const OptionalTensor b_hidden = widen(b_hh), peephole = widen(w_peep), projection = widen(w_hr);
  const Tensor w_hidden = w_hh.to(math_dtype);
  const bool lstm = cell == "lstm" || cell == "lstm_coupled", coupled = cell == "lstm_coupled";
  const bool rnn = cell == "rnn_tanh" || cell == "rnn_relu", reset_before = cell == "gru_reset_before";
  // Without a projection only LSTM's state width differs from h's; with one, c0 holds it.
  const int64_t hidden = lstm ? c0->size(1) : h0.size(1);
  const int64_t steps = input.size(0);
  // The reset-before GRU's n block multiplies r ⊙ h, not h: that product comes inside the step.
  const int64_t hidden_rows = reset_before ? 2 * hidden : w_hh.size(0);
  const Tensor w_rz = w_hidden.narrow(0, 0, hidden_rows);
  const OptionalTensor b_rz = b_hidden ? OptionalTensor(b_hidden->narrow(0, 0, hidden_rows)) : std::nullopt;
  const Tensor x_gates = at::linear(input.to(math_dtype), w_ih.to(math_dtype), widen(b_ih));
  Tensor h = h0.to(math_dtype);
  Tensor c = lstm ? c0->to(math_dtype) : Tensor();
  std::vector<Tensor> outputs(steps);
  for (int64_t step = 0; step < steps; ++step) {
    const int64_t t = reverse ? steps - 1 - step : step;
    const Tensor x_t = x_gates.select(0, t);
    const Tensor h_gates = at::linear(h, w_rz, b_rz);
    Tensor h_new, c_new;
    if (rnn) {
      h_new = cell == "rnn_relu" ? at::relu(x_t + h_gates) : at::tanh(x_t + h_gates);
    } else if (lstm) {
      const std::vector<Tensor> blocks = (x_t + h_gates).chunk(coupled ? 3 : 4, 1);
      Tensor i_pre = coupled ? Tensor() : blocks[0], f_pre = blocks[coupled ? 0 : 1];
      const Tensor g = at::tanh(blocks[coupled ? 1 : 2]);
      Tensor o_pre = blocks[coupled ? 2 : 3];
      if (peephole) {
        if (!coupled) {
          i_pre = i_pre + peephole->select(0, 0) * c;
        }
        f_pre = f_pre + peephole->select(0, coupled ? 0 : 1) * c;
      }
      const Tensor f = at::sigmoid(f_pre);
      const Tensor i = coupled ? 1 - f : at::sigmoid(i_pre);
      c_new = f * c + i * g;
      if (peephole) {
        // The output gate peeks at the new cell state.
        o_pre = o_pre + peephole->select(0, -1) * c_new;
      }
      h_new = at::sigmoid(o_pre) * at::tanh(c_new);
      if (projection) {
        h_new = at::linear(h_new, *projection);
      }
    } else {
      const std::vector<Tensor> x_blocks = x_t.chunk(3, 1), h_blocks = h_gates.chunk(reset_before ? 2 : 3, 1);
      const Tensor r = at::sigmoid(x_blocks[0] + h_blocks[0]);
      const Tensor z = at::sigmoid(x_blocks[1] + h_blocks[1]);
      const Tensor n_hidden =
          reset_before ? at::linear(r * h, w_hidden.narrow(0, hidden_rows, hidden),
                                    b_hidden ? OptionalTensor(b_hidden->narrow(0, hidden_rows, hidden)) : std::nullopt)
                       : r * h_blocks[2];
      const Tensor n = at::tanh(x_blocks[2] + n_hidden);
      h_new = (1 - z) * n + z * h;
    }
    if (lengths) {
      // Sequences past their end keep their state and output zeros.
      const Tensor taken = lengths->gt(t).unsqueeze(1);
      outputs[t] = at::where(taken, h_new, 0);
      h = at::where(taken, h_new, h);
      c = lstm ? at::where(taken, c_new, c) : c;
    } else {
      outputs[t] = h_new;
      h = h_new;
      c = c_new;
    }
  }
  const Tensor output = steps > 0 ? at::stack(outputs) : input.new_zeros({0, input.size(1), h.size(1)});
  return {output.to(dtype), h.to(dtype), lstm ? c.to(dtype) : Tensor()};
}

bool has_tangent(const Tensor& tensor) { return tensor.defined() && tensor._fw_grad(/*level=*/0).defined(); }

bool has_tangent(const OptionalTensor& tensor) { return tensor && has_tangent(*tensor); }

template <typename... Tensors>
bool carries_tangent(const Tensors&... tensors) {
  return (has_tangent(tensors) || ...);
}

// Gives `output` the tangent of `dual`, an output of the ATen-op layer on the same numbers
// (none where the output does not depend on any tangent, as c_n on w_hr's at T = 1).
void set_tangent(const Tensor& output, const Tensor& dual) {
  if (has_tangent(dual)) {
    output._set_fw_grad(dual._fw_grad(/*level=*/0), /*level=*/0, /*is_inplace_op=*/false);
  }
}

// Whether an op needs its autograd Function: a gradient to track. (Tangents are dealt with
// before: the Function cannot carry them.)
bool tracked(const Tensor& tensor) { return tensor.defined() && tensor.requires_grad(); }

bool tracked(const OptionalTensor& tensor) { return tensor && tracked(*tensor); }

template <typename... Tensors>
bool needs_autograd(const Tensors&... tensors) {
  return at::GradMode::is_enabled() && (tracked(tensors) || ...);
}

LayerOutputs forward_autograd(const Tensor& input, const Tensor& h0, const OptionalTensor& c0, const Tensor& w_ih,
                              const Tensor& w_hh, const OptionalTensor& b_ih, const OptionalTensor& b_hh,
                              const OptionalTensor& w_hr, const OptionalTensor& w_peep,
                              const OptionalTensor& lengths, c10::string_view cell, bool reverse) {
  if (functorch_transform_active()) {
    // A C++ autograd Function raises under a functorch transform.
    check_recurrent_layer(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, lengths, std::string(cell));
    const auto [output, h_n, c_n] =
        layer_from_aten_ops(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, lengths, cell, reverse);
    const Tensor absent = input.new_empty({0});
    return {output, h_n, c_n.defined() ? c_n : absent, absent};
  }
  if (carries_tangent(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep)) {
    // The Function cannot carry tangents either. The kernels compute the outputs from the primals
    // (the same numbers as without a tangent, tracked for backward as usual), the ATen-op layer
    // their tangents (with a graph of their own where grad mode asks for one).
    const auto primal = [](const OptionalTensor& tensor) -> OptionalTensor {
      return tensor ? OptionalTensor(tensor->_fw_primal(0)) : std::nullopt;
    };
    LayerOutputs outputs =
        forward_autograd(input._fw_primal(0), h0._fw_primal(0), primal(c0), w_ih._fw_primal(0), w_hh._fw_primal(0),
                         primal(b_ih), primal(b_hh), primal(w_hr), primal(w_peep), lengths, cell, reverse);
    const auto [output, h_n, c_n] =
        layer_from_aten_ops(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, lengths, cell, reverse);
    set_tangent(std::get<0>(outputs), output);
    set_tangent(std::get<1>(outputs), h_n);
    set_tangent(std::get<2>(outputs), c_n);
    return outputs;
  }
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

// Forward-mode AD of the backward (a jvp of a gradient outside torch.func) has no path; say so
// instead of dropping the tangent, and name the paths that exist.
constexpr const char* kNoTangentOfBackward =
    "seqkern recurrent layers have no forward-mode AD of their backward (a jvp of a gradient outside "
    "torch.func); torch.func.jvp(torch.func.grad(f)), torch.func.hessian and double backward "
    "(create_graph=True) work";

// The BPTT op, for create_graph=True. Its own backward (the second derivatives) differentiates
// twice through the layer written as ATen ops, recomputed from the saved arguments: the BPTT
// kernel has no derivative of its own, and this runs only where a second derivative is asked
// for. Those ops have derivatives of every order, so third ones work too.
class RecurrentLayerBackwardFunction : public torch::autograd::Function<RecurrentLayerBackwardFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& grad_output, const Tensor& grad_h_n,
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
    const Tensor none;
    ctx->save_for_backward({grad_output, grad_h_n, grad_c_n.value_or(none), input, h0, c0.value_or(none), w_ih, w_hh,
                            b_ih.value_or(none), b_hh.value_or(none), w_hr.value_or(none), w_peep.value_or(none),
                            lengths.value_or(none)});
    ctx->saved_data["cell"] = std::string(cell);
    ctx->saved_data["reverse"] = reverse;
    ctx->saved_data["need_input_grad"] = need_input_grad;
    ctx->saved_data["need_weight_grad"] = need_weight_grad;
    // The gradients nobody differentiates (absent or unused ones) get no zero-filled grad_grads.
    ctx->set_materialize_grads(false);
    return as_list(grads);
  }

  // grad_grads: one per gradient forward returned (input, h0, c0, w_ih, ..., w_peep).
  static variable_list backward(AutogradContext* ctx, variable_list grad_grads) {
    // The engine runs a backward in grad mode exactly when it was asked for create_graph=True
    // (the double-vjp trick of torch.autograd.functional.hvp, third derivatives): then these
    // second derivatives must be differentiable in turn.
    const bool create_graph = at::GradMode::is_enabled();
    const variable_list saved = ctx->get_saved_variables();
    // Saved: the upstream gradients, the layer's tensors and lengths, in argument order; output
    // and workspace, which follow, are not needed (the recomputation makes its own).
    enum { kUpstream = 3, kLayerTensors = 9, kLengths = kUpstream + kLayerTensors, kArguments = kLengths + 7 };
    // needs_input_grad counts only the tensors that were given, in argument order.
    bool needs[kLengths] = {};
    for (int argument = 0, edge = 0; argument < kLengths; ++argument) {
      if (saved[argument].defined()) {
        needs[argument] = ctx->needs_input_grad(edge++);
      }
    }
    // Which gradients forward returned (h0's and c0's always; the rest on request).
    const bool input_grad_returned = ctx->saved_data["need_input_grad"].toBool();
    const bool weight_grads_returned = ctx->saved_data["need_weight_grad"].toBool();

    at::AutoGradMode grad_mode(true);
    // Each saved tensor that requires grad enters the recomputation as an alias of its own, at
    // which the gradients below stop: they are partial derivatives, not paths through another
    // saved tensor's history (an upstream gradient computed from the output depends on the
    // input), and through the aliases the result stays on the graph for create_graph=True.
    variable_list leaves(kLengths);
    for (int argument = 0; argument < kLengths; ++argument) {
      const Tensor& tensor = saved[argument];
      leaves[argument] = tensor.defined() && tensor.requires_grad() ? tensor.view_as(tensor) : tensor;
    }
    const auto optional = [](const Tensor& tensor) { return present(tensor); };
    const Tensor* layer = &leaves[kUpstream];
    const auto [output, h_n, c_n] = layer_from_aten_ops(
        layer[0], layer[1], optional(layer[2]), layer[3], layer[4], optional(layer[5]), optional(layer[6]),
        optional(layer[7]), optional(layer[8]), optional(saved[kLengths]), ctx->saved_data["cell"].toStringRef(),
        ctx->saved_data["reverse"].toBool());
    variable_list outputs{output, h_n}, upstream{leaves[0], leaves[1]};
    if (c_n.defined()) {
      outputs.push_back(c_n);
      upstream.push_back(leaves[2]);
    }
    // The first-order gradients forward returned and something differentiates.
    variable_list differentiated, cotangents;
    for (int tensor = 0; tensor < kLayerTensors; ++tensor) {
      const bool returned = tensor == 0 ? input_grad_returned : tensor <= 2 || weight_grads_returned;
      if (returned && layer[tensor].defined() && grad_grads[tensor].defined()) {
        differentiated.push_back(layer[tensor]);
        cotangents.push_back(grad_grads[tensor]);
      }
    }
    // lengths, output, workspace, cell, reverse, need_input_grad, need_weight_grad get none.
    variable_list grad_inputs(kArguments);
    if (differentiated.empty()) {
      return grad_inputs;
    }
    const variable_list first = torch::autograd::grad(outputs, differentiated, upstream, /*retain_graph=*/true,
                                                      /*create_graph=*/true, /*allow_unused=*/true);
    variable_list sources, weights;
    for (size_t index = 0; index < first.size(); ++index) {
      if (first[index].defined() && first[index].requires_grad()) {
        sources.push_back(first[index]);
        weights.push_back(cotangents[index]);
      }
    }
    variable_list targets;
    std::vector<int> target_arguments;
    for (int argument = 0; argument < kLengths; ++argument) {
      if (needs[argument]) {
        targets.push_back(leaves[argument]);
        target_arguments.push_back(argument);
      }
    }
    if (sources.empty() || targets.empty()) {
      return grad_inputs;
    }
    const variable_list second = torch::autograd::grad(sources, targets, weights, /*retain_graph=*/create_graph,
                                                       create_graph, /*allow_unused=*/true);
    for (size_t index = 0; index < targets.size(); ++index) {
      grad_inputs[target_arguments[index]] = second[index];
    }
    return grad_inputs;
  }
};

RecurrentGrads backward_autograd(const Tensor& grad_output, const Tensor& grad_h_n, const OptionalTensor& grad_c_n,
                                 const Tensor& input, const Tensor& h0, const OptionalTensor& c0, const Tensor& w_ih,
                                 const Tensor& w_hh, const OptionalTensor& b_ih, const OptionalTensor& b_hh,
                                 const OptionalTensor& w_hr, const OptionalTensor& w_peep,
                                 const OptionalTensor& lengths, const Tensor& output, const Tensor& workspace,
                                 c10::string_view cell, bool reverse, bool need_input_grad, bool need_weight_grad) {
  TORCH_CHECK(!carries_tangent(grad_output, grad_h_n, grad_c_n, input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep,
                               output),
              kNoTangentOfBackward);
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

void register_recurrent_op_calls(pybind11::module_& module) {
  namespace py = pybind11;
  using CellSignature = std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const OptionalTensor&,
                                                   const Tensor&, const Tensor&, const OptionalTensor&,
                                                   const OptionalTensor&, const OptionalTensor&, c10::string_view);
  module.def(
      "_recurrent_cell_call",
      [](const Tensor& input, const Tensor& h, const OptionalTensor& c, const Tensor& w_ih, const Tensor& w_hh,
         const OptionalTensor& b_ih, const OptionalTensor& b_hh, const OptionalTensor& w_peep,
         const std::string& cell) {
        static const auto op = c10::Dispatcher::singleton()
                                   .findSchemaOrThrow("seqkern::recurrent_cell", "")
                                   .typed<CellSignature>();
        return op.call(input, h, c, w_ih, w_hh, b_ih, b_hh, w_peep, cell);
      },
      py::call_guard<py::gil_scoped_release>(),
      "seqkern::recurrent_cell through the dispatcher, with the op's arguments in its order (positional only)");
  module.def(
      "_recurrent_layer_call",
      [](const Tensor& input, const Tensor& h0, const OptionalTensor& c0, const Tensor& w_ih, const Tensor& w_hh,
         const OptionalTensor& b_ih, const OptionalTensor& b_hh, const OptionalTensor& w_hr,
         const OptionalTensor& w_peep, const OptionalTensor& lengths, const std::string& cell, bool reverse) {
        return forward_op().call(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, lengths, cell, reverse);
      },
      py::call_guard<py::gil_scoped_release>(),
      "seqkern::recurrent_layer through the dispatcher, with the op's arguments in its order (positional only)");
}

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
