// seqkern C++ CPU kernels. Two ways in:
//  - the torch.library ops (TORCH_LIBRARY(seqkern, ...) in recurrent_op.cpp): schemas, CPU
//    kernels and autograd, what seqkern.functional calls;
//  - the raw kernels on the pybind11 module seqkern._C (bindings.cpp), which the ops' backend
//    override, the tests and the probes call without the dispatcher.
#pragma once
#include <torch/extension.h>

#include <optional>
#include <string>
#include <tuple>

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

void register_recurrent(pybind11::module_& module);
void register_recurrent_override(pybind11::module_& module);
void register_pooling(pybind11::module_& module);
}  // namespace seqkern
