// seqkern C++ CPU kernels. Two ways in:
//  - the torch.library ops (TORCH_LIBRARY(seqkern, ...) in recurrent_op.cpp and its fragment
//    in pooling_op.cpp): schemas, CPU kernels and autograd, what seqkern.functional calls;
//  - the raw kernels on the pybind11 module seqkern._C (bindings.cpp), which the ops' backend
//    override, the tests and the probes call without the dispatcher.
#pragma once
#include <torch/extension.h>

#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace seqkern {

// Gradients of (input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep); absent ones are (0,).
using RecurrentGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                  at::Tensor, at::Tensor>;

// One layer, one direction, whole sequence -> (output, h_n, c_n, workspace). The contract
// (arguments, workspace layout) is in seqkern/ops/recurrent.py.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> recurrent_layer_forward(
    const at::Tensor& input, const at::Tensor& h0, const std::optional<at::Tensor>& c0, const at::Tensor& w_ih,
    const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
    const std::optional<at::Tensor>& w_hr, const std::optional<at::Tensor>& w_peep,
    const std::optional<at::Tensor>& lengths, const std::string& cell, bool reverse);

// recurrent_layer_forward's argument checks that hold on every device (shapes, dtypes and
// devices that agree, lengths in [0, T]), for a path that runs no kernel of ours.
void check_recurrent_layer(const at::Tensor& input, const at::Tensor& h0, const std::optional<at::Tensor>& c0,
                           const at::Tensor& w_ih, const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
                           const std::optional<at::Tensor>& b_hh, const std::optional<at::Tensor>& w_hr,
                           const std::optional<at::Tensor>& w_peep, const std::optional<at::Tensor>& lengths,
                           const std::string& cell);

// Backpropagation through time of recurrent_layer_forward.
RecurrentGrads recurrent_layer_backward(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                                        const std::optional<at::Tensor>& grad_c_n, const at::Tensor& input,
                                        const at::Tensor& h0, const std::optional<at::Tensor>& c0,
                                        const at::Tensor& w_ih, const at::Tensor& w_hh,
                                        const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
                                        const std::optional<at::Tensor>& w_hr, const std::optional<at::Tensor>& w_peep,
                                        const std::optional<at::Tensor>& lengths, const at::Tensor& output,
                                        const at::Tensor& workspace, const std::string& cell, bool reverse,
                                        bool need_input_grad, bool need_weight_grad);

// Max pool forward over the trailing 1-3 axes of (N, C, *S) -> (output, indices), indices
// (0,) without index_dtype; padding (before, after) per spatial axis, flat as the op takes it.
// And its backward. Both check their arguments as the Python path does. The contract is in
// seqkern/ops/pooling.py.
std::tuple<at::Tensor, at::Tensor> max_pool_forward(const at::Tensor& input, at::IntArrayRef kernel_size,
                                                    at::IntArrayRef stride, at::IntArrayRef dilation,
                                                    at::IntArrayRef padding, bool ceil_mode, double pad_value,
                                                    std::optional<at::ScalarType> index_dtype);
// Pooled length along one axis: torch's rule (floor division), extended to unequal padding
// sides; with ceil_mode the last window must start inside the input or the leading padding.
int64_t pool_output_size(int64_t length, int64_t kernel, int64_t stride, int64_t dilation, int64_t before,
                         int64_t after, bool ceil_mode);
at::Tensor max_pool_backward(const at::Tensor& grad_output, const at::Tensor& indices, at::IntArrayRef input_size,
                             at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef dilation,
                             at::IntArrayRef padding);

// Whether a functorch transform (torch.func.grad, vmap, jvp, ...) is on functorch's stack, under
// which a C++ autograd Function raises: functorch includes its dynamic-layer key in every
// dispatch while it is. (functorch's own query, DynamicLayer.h, needs a header torch does not
// ship.)
inline bool functorch_transform_active() {
  return c10::impl::tls_is_dispatch_key_included(c10::DispatchKey::FuncTorchDynamicLayerFrontMode);
}

// Whether SEQKERN_BACKEND is set: the ops' CPU kernels then hand each call to the Python
// functions that their family's module registered (seqkern/_backend.py picks the backend).
bool backend_overridden();

// Those functions of one op family, set once from Python (module._set_<family>_override) and
// never freed: they must outlive interpreter shutdown order.
class BackendOverride {
 public:
  explicit BackendOverride(const char* module) : module_(module) {}
  // The function; a clear error if the Python module has not registered it.
  pybind11::object& forward() const { return checked(forward_); }
  pybind11::object& backward() const { return checked(backward_); }
  // Defines the setter `name` on the extension module.
  void register_setter(pybind11::module_& extension, const char* name);

 private:
  pybind11::object& checked(pybind11::object* function) const;

  const char* module_;
  pybind11::object* forward_ = nullptr;
  pybind11::object* backward_ = nullptr;
};

extern BackendOverride recurrent_override;  // seqkern.ops.recurrent (recurrent_op.cpp)
extern BackendOverride pooling_override;    // seqkern.ops.pooling (pooling_op.cpp)

void register_recurrent(pybind11::module_& module);
void register_pooling(pybind11::module_& module);

// Python entry points that call the registered ops through the dispatcher, as torch.ops
// does, without its Python argument handling (which costs more than a small pool's kernel).
// seqkern.ops calls them in eager mode where torch.ops would do nothing else: no
// __torch_function__ to honour, no Dynamo tracing (recurrent_op.cpp, pooling_op.cpp).
void register_recurrent_op_calls(pybind11::module_& module);
void register_pooling_op_calls(pybind11::module_& module);
}  // namespace seqkern
