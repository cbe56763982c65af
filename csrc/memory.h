// Allocation shared by the CPU kernels (memory.cpp).
#pragma once
#include <ATen/ATen.h>

namespace seqkern {

// An uninitialised CPU tensor for a large result or buffer of a kernel, like at::empty,
// whose memory is recycled once the tensor dies (see memory.cpp).
at::Tensor empty_large(at::IntArrayRef sizes, const at::TensorOptions& options);

}  // namespace seqkern
