// Max-pool kernels (CPU).
#include "seqkern.h"

namespace seqkern {
void register_pooling(pybind11::module_& module) {}
}  // namespace seqkern
