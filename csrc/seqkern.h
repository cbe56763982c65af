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
// (0,) without index_dtype; padding as (before, after) per spatial axis. And its backward.
// The contract is in seqkern/ops/pooling.py.
std::tuple<at::Tensor, at::Tensor> max_pool_forward(const at::Tensor& input, std::vector<int64_t> kernel_size,
                                                    std::vector<int64_t> stride, std::vector<int64_t> dilation,
                                                    std::vector<std::pair<int64_t, int64_t>> padding,
                                                    bool ceil_mode, double pad_value,
                                                    std::optional<at::ScalarType> index_dtype);
at::Tensor max_pool_backward(const at::Tensor& grad_output, const at::Tensor& indices,
                             std::vector<int64_t> input_size, const std::vector<int64_t>& kernel_size,
                             const std::vector<int64_t>& stride, const std::vector<int64_t>& dilation,
                             const std::vector<std::pair<int64_t, int64_t>>& padding);

// Whether SEQKERN_BACKEND is set: the ops' CPU kernels then hand each call to the Python
// function that their module registered (seqkern/_backend.py picks the backend).
bool backend_overridden();
// That function; a clear error if `module` (named in it) has not registered one.
pybind11::object& backend_override(pybind11::object* function, const char* module);

void register_recurrent(pybind11::module_& module);
void register_recurrent_override(pybind11::module_& module);
void register_pooling(pybind11::module_& module);
void register_pooling_override(pybind11::module_& module);
}  // namespace seqkern
