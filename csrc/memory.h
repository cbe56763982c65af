// Allocation shared by the CPU kernels.
#pragma once
#include <ATen/ATen.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <cstdint>

namespace seqkern {

// A large tensor for results and buffers. A fresh allocation costs one page fault per 4 KiB
// on first touch, which is most of the time of a pool over a large input and a tenth of a
// recurrent forward at T = 100, B = 64, H = 512. Transparent huge pages ("madvise" mode, the
// usual kernel default) leave one per 2 MiB. The advice is a hint: a kernel that ignores or
// refuses it costs nothing.
inline at::Tensor empty_large(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor tensor = at::empty(sizes, options);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHugePage = uintptr_t{1} << 21;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(tensor.data_ptr());
  const uintptr_t end = begin + static_cast<uintptr_t>(tensor.nbytes());
  const uintptr_t first = (begin + kHugePage - 1) & ~(kHugePage - 1), last = end & ~(kHugePage - 1);
  if (last >= first + 2 * kHugePage) {
    madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
  }
#endif
  return tensor;
}

}  // namespace seqkern
