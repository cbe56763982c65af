// Allocation shared by the CPU kernels.
#pragma once
#include <ATen/ATen.h>
#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <cstdint>
#include <deque>
#include <mutex>

namespace seqkern {

// Large tensors for results and buffers (a layer's output, workspace and gate gradients; a
// pool's output), from a cache of freed blocks. A fresh allocation costs a page fault per
// page on first touch, and the kernels touch their buffers a step at a time, so a fault
// stalls the one thread that takes it while the others wait at the step's barrier. On a
// 2-vCPU VM (AMD EPYC Zen 4), faulting in 64 MiB took 7 ms with 2 MiB pages and 26 to 35 ms
// with 4 KiB ones, and 150 ms where the host had not backed that memory yet (one fault
// took 8 ms); a training step of an LSTM at T = 100, B = 64, H = 512 allocates about 150 MB.
// A block that comes back from the cache is already faulted in. Blocks are whole 2 MiB
// pages, aligned and advised as transparent huge pages ("madvise" mode, the usual kernel
// default; a kernel that ignores or refuses the advice costs nothing). At most
// kMaxCachedBytes of free blocks are kept, the least recently freed returned first.
class LargeBlockAllocator final : public c10::Allocator {
 public:
  // Smaller requests go to the CPU allocator: they come from malloc's reused memory.
  static constexpr size_t kMinBytes = size_t{4} << 20;
  static constexpr size_t kMaxCachedBytes = size_t{256} << 20;
  static constexpr size_t kPage = size_t{1} << 21;

  static LargeBlockAllocator& get() {
    // Never destroyed: tensors freed during interpreter shutdown still return their blocks.
    static LargeBlockAllocator* allocator = new LargeBlockAllocator();
    return *allocator;
  }

  c10::DataPtr allocate(size_t bytes) override {
#if defined(__linux__)
    if (bytes >= kMinBytes) {
      Block* block = take(round_up(bytes));
      return {block->data, block, &LargeBlockAllocator::release, c10::Device(c10::kCPU)};
    }
#endif
    return c10::GetCPUAllocator()->allocate(bytes);
  }

  void copy_data(void* destination, const void* source, std::size_t count) const override {
    default_copy_data(destination, source, count);
  }

  // Bytes of free blocks held (for tests).
  size_t cached_bytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return cached_bytes_;
  }

  // Returns every free block to the system.
  void empty_cache() {
    std::deque<Block*> blocks;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      blocks.swap(free_);
      cached_bytes_ = 0;
    }
    for (Block* block : blocks) {
      unmap(block);
    }
  }

 private:
  struct Block {
    void* mapping;
    size_t mapped_bytes;
    void* data;  // kPage-aligned, within the mapping
    size_t bytes;
  };

  static size_t round_up(size_t bytes) { return (bytes + kPage - 1) / kPage * kPage; }

  Block* take(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (auto it = free_.rbegin(); it != free_.rend(); ++it) {
        if ((*it)->bytes == bytes) {
          Block* block = *it;
          free_.erase(std::next(it).base());
          cached_bytes_ -= bytes;
          return block;
        }
      }
    }
    return map(bytes);
  }

  static Block* map(size_t bytes) {
#if defined(__linux__)
    const size_t mapped_bytes = bytes + kPage;
    void* mapping = mmap(nullptr, mapped_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    TORCH_CHECK(mapping != MAP_FAILED, "seqkern: out of memory allocating ", bytes, " bytes");
    const uintptr_t aligned = (reinterpret_cast<uintptr_t>(mapping) + kPage - 1) & ~(uintptr_t{kPage} - 1);
    void* data = reinterpret_cast<void*>(aligned);
#if defined(MADV_HUGEPAGE)
    madvise(data, bytes, MADV_HUGEPAGE);
#endif
    return new Block{mapping, mapped_bytes, data, bytes};
#else
    TORCH_CHECK(false, "seqkern: LargeBlockAllocator needs Linux");
#endif
  }

  static void unmap(Block* block) {
#if defined(__linux__)
    munmap(block->mapping, block->mapped_bytes);
#endif
    delete block;
  }

  static void release(void* context) {
    Block* block = static_cast<Block*>(context);
    LargeBlockAllocator& allocator = get();
    std::deque<Block*> evicted;
    {
      std::lock_guard<std::mutex> lock(allocator.mutex_);
      if (block->bytes <= kMaxCachedBytes) {
        allocator.free_.push_back(block);
        allocator.cached_bytes_ += block->bytes;
        block = nullptr;
        while (allocator.cached_bytes_ > kMaxCachedBytes) {
          evicted.push_back(allocator.free_.front());
          allocator.cached_bytes_ -= allocator.free_.front()->bytes;
          allocator.free_.pop_front();
        }
      }
    }
    if (block != nullptr) {
      unmap(block);
    }
    for (Block* old : evicted) {
      unmap(old);
    }
  }

  std::mutex mutex_;
  std::deque<Block*> free_;  // least recently freed first
  size_t cached_bytes_ = 0;
};

inline at::Tensor empty_large(at::IntArrayRef sizes, const at::TensorOptions& options) {
  return at::Tensor(at::detail::empty_generic(sizes, &LargeBlockAllocator::get(),
                                              c10::DispatchKeySet(c10::DispatchKey::CPU),
                                              c10::typeMetaToScalarType(options.dtype()),
                                              options.memory_format_opt()));
}

}  // namespace seqkern
