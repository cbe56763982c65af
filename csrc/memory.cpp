// Large CPU buffers, recycled.
//
// The first touch of freshly allocated memory costs a page fault per page and the kernel's
// zeroing of it. glibc hands blocks of more than about 128 KiB back to the kernel when they
// are freed, so every call of a kernel pays that again for its results and buffers: about
// 5 % of an LSTM forward at T = 100, B = 64, H = 512 (its workspace alone is 65 MB; 137-149
// ms per call with the memory reused against 140-160 ms fresh, in the same runs), more of a
// max pool's. So the memory of the tensors made by empty_large goes back to a cache when
// they die, and the next large buffer of a close size takes it: a training loop's
// workspaces, outputs and gradients cycle through the same pages. The cache holds at most
// kMaxCachedBytes; blocks from 2 MiB on are aligned and advised for transparent huge pages,
// so that even a fresh one costs one fault per 2 MiB.
#include "memory.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>
#include <c10/util/Exception.h>
#include <c10/util/accumulate.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <utility>
#include <vector>

#include "seqkern.h"

namespace seqkern {
namespace {

// Below this, at::empty: glibc keeps freed blocks this small for reuse itself.
constexpr size_t kMinCachedBytes = size_t{1} << 17;
constexpr size_t kMaxCachedBytes = size_t{1} << 28;
constexpr size_t kHugePage = size_t{1} << 21;
constexpr size_t kPage = size_t{1} << 12;

struct Block {
  void* data;
  size_t bytes;
};

class LargeBufferAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t bytes) override {
    Block* block = take(bytes);
    if (block == nullptr) {
      block = fresh(bytes);
    }
    return {block->data, block, &give_back, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  std::pair<size_t, size_t> cached() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {cached_bytes_, free_.size()};
  }

  // Frees every cached block; returns the bytes freed.
  size_t release() {
    std::vector<Block*> blocks;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      blocks.swap(free_);
      cached_bytes_ = 0;
    }
    size_t bytes = 0;
    for (Block* block : blocks) {
      bytes += block->bytes;
      destroy(block);
    }
    return bytes;
  }

 private:
  // The smallest cached block that holds `bytes` and wastes at most as much again.
  Block* take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto best = free_.end();
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      const size_t size = (*it)->bytes;
      if (size >= bytes && size / 2 <= bytes && (best == free_.end() || size < (*best)->bytes)) {
        best = it;
      }
    }
    if (best == free_.end()) {
      return nullptr;
    }
    Block* block = *best;
    free_.erase(best);
    cached_bytes_ -= block->bytes;
    return block;
  }

  Block* fresh(size_t bytes) {
    const size_t alignment = bytes >= kHugePage ? kHugePage : kPage;
    const size_t size = (std::max<size_t>(bytes, 1) + alignment - 1) / alignment * alignment;
    void* data = nullptr;
    if (posix_memalign(&data, alignment, size) != 0) {
      release();
      TORCH_CHECK_WITH(OutOfMemoryError, posix_memalign(&data, alignment, size) == 0,
                       "seqkern: could not allocate ", size, " bytes on the CPU");
    }
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (alignment == kHugePage) {
      // A hint: a kernel that ignores or refuses it costs nothing.
      madvise(data, size, MADV_HUGEPAGE);
    }
#endif
    return new Block{data, size};
  }

  static void destroy(Block* block) {
    std::free(block->data);
    delete block;
  }

  static void give_back(void* context);

  std::mutex mutex_;
  std::vector<Block*> free_;  // oldest first
  size_t cached_bytes_ = 0;

  friend LargeBufferAllocator& large_buffers();
  LargeBufferAllocator() = default;
};

// Never destroyed: tensors may die after static destructors have run (at interpreter exit).
LargeBufferAllocator& large_buffers() {
  static auto* allocator = new LargeBufferAllocator();
  return *allocator;
}

void LargeBufferAllocator::give_back(void* context) {
  auto* block = static_cast<Block*>(context);
  LargeBufferAllocator& self = large_buffers();
  std::vector<Block*> evicted;
  {
    std::lock_guard<std::mutex> lock(self.mutex_);
    if (block->bytes >= kMinCachedBytes && block->bytes <= kMaxCachedBytes) {
      // The oldest blocks make room: a loop's current sizes are the newest.
      auto keep = self.free_.begin();
      while (self.cached_bytes_ + block->bytes > kMaxCachedBytes) {
        self.cached_bytes_ -= (*keep)->bytes;
        evicted.push_back(*keep++);
      }
      self.free_.erase(self.free_.begin(), keep);
      self.free_.push_back(block);
      self.cached_bytes_ += block->bytes;
      block = nullptr;
    }
  }
  for (Block* old : evicted) {
    destroy(old);
  }
  if (block != nullptr) {
    destroy(block);
  }
}

}  // namespace

at::Tensor empty_large(at::IntArrayRef sizes, const at::TensorOptions& options) {
  const size_t bytes = static_cast<size_t>(c10::multiply_integers(sizes)) * options.dtype().itemsize();
  if (bytes < kMinCachedBytes) {
    return at::empty(sizes, options);
  }
  return at::detail::empty_generic(sizes, &large_buffers(), c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   options.dtype().toScalarType(), options.memory_format_opt());
}

void register_memory(pybind11::module_& module) {
  module.def(
      "_large_buffer_cache", [] { return large_buffers().cached(); },
      "For tests: (bytes, blocks) of large CPU buffers held for reuse after their tensors died.");
  module.def(
      "release_large_buffers", [] { return large_buffers().release(); },
      "Frees the large CPU buffers that seqkern's kernels keep for reuse after their tensors died (at most "
      "256 MiB); returns the bytes freed. Like torch.cuda.empty_cache, for a process that is done with them.");
}

}  // namespace seqkern
