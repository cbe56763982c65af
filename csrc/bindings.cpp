// The pybind11 loader of seqkern._C: one module, one registration call per op family.
#include "seqkern.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.doc() = "seqkern C++ CPU kernels";
  seqkern::register_recurrent(module);
  seqkern::register_pooling(module);
}
