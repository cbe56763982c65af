// The pybind11 loader of seqkern._C: one module, one registration call per op family.
// Loading it also runs the TORCH_LIBRARY registrations of the ops (recurrent_op.cpp).
#include "seqkern.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.doc() = "seqkern C++ CPU kernels";
  seqkern::register_recurrent(module);
  seqkern::register_recurrent_override(module);
  seqkern::register_pooling(module);
}
