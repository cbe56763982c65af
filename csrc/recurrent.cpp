// Recurrent layer kernels (CPU). Contract: seqkern/ops/recurrent.py.
#include "seqkern.h"

namespace seqkern {
void register_recurrent(pybind11::module_& module) {}
}  // namespace seqkern
