// The pybind11 loader of seqkern._C: one module, one registration call per op family, and
// the hooks of the large-buffer cache that every family's kernels share (memory.h).
// Loading it also runs the TORCH_LIBRARY registrations of the ops (recurrent_op.cpp,
// pooling_op.cpp).
#include "memory.h"
#include "seqkern.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.doc() = "seqkern C++ CPU kernels";
  seqkern::register_recurrent(module);
  seqkern::register_recurrent_op_calls(module);
  seqkern::recurrent_override.register_setter(module, "_set_recurrent_override");
  seqkern::register_pooling(module);
  seqkern::register_pooling_op_calls(module);
  seqkern::pooling_override.register_setter(module, "_set_pooling_override");
  module.def(
      "_empty_large_block_cache", [] { seqkern::LargeBlockAllocator::get().empty_cache(); },
      "Return the free blocks that the kernels' large buffers are cached in to the system.");
  module.def(
      "_large_block_cache_bytes", [] { return seqkern::LargeBlockAllocator::get().cached_bytes(); },
      "Bytes of free blocks held in the cache of the kernels' large buffers.");
  module.attr("_large_block_cache_limit") = seqkern::LargeBlockAllocator::kMaxCachedBytes;
  module.attr("_large_block_min_bytes") = seqkern::LargeBlockAllocator::kMinBytes;
}
