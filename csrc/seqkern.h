// seqkern C++ CPU kernels: each op family registers its functions on the one
// pybind11 module seqkern._C (see bindings.cpp).
#pragma once
#include <torch/extension.h>

namespace seqkern {
void register_recurrent(pybind11::module_& module);
void register_pooling(pybind11::module_& module);
}  // namespace seqkern
