// Allocation shared by the CPU kernels.
#pragma once
#include <ATen/ATen.h>
#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/strides.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <cstdint>
#include <deque>
#include <iterator>
#include <list>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace seqkern {

// Large tensors for results and buffers (a layer's output, workspace and gate gradients; a
// pool's output), from a cache of freed blocks. A fresh allocation costs a page fault per
// page on first touch, and the kernels touch their buffers a step at a time, so a fault
// stalls the one thread that takes it while the others wait at the step's barrier. On a
// 2-vCPU VM (AMD EPYC Zen 4), faulting in 64 MiB took 7 ms with 2 MiB pages and 26 to 35 ms
// with 4 KiB ones, and 150 ms where the host had not backed that memory yet (one fault
// took 8 ms); a training step of an LSTM at T = 100, B = 64, H = 512 allocates about 150 MB.
// Smaller buffers fault too: malloc serves them from the top of its heap, and a training
// step frees them all before the next one, so malloc hands that memory back to the system
// (trims the heap) and faults it in again on every step (T = 100, B = 16, H = 128: 17 to
// 108 faults per step for an LSTM, 69 to 280 for an RNN). A block that comes back from the
// cache is already faulted in. Blocks of 2 MiB and up are whole 2 MiB pages, aligned and
// advised as transparent huge pages ("madvise" mode, the usual kernel default; a kernel
// that ignores or refuses the advice costs nothing); smaller ones are whole 4 KiB pages. A
// request takes the most recently freed block of its rounded size. At most kMaxCachedBytes
// of free blocks are kept, the least recently freed returned to the system first.
class LargeBlockAllocator final : public c10::Allocator {
 public:
  // Smaller requests go to the CPU allocator: malloc serves them from its bins, which it
  // keeps (128 KiB is where glibc starts to map or trim).
  static constexpr size_t kMinBytes = size_t{128} << 10;
  static constexpr size_t kMaxCachedBytes = size_t{256} << 20;
  static constexpr size_t kHugePage = size_t{1} << 21;
  static constexpr size_t kSmallPage = size_t{1} << 12;

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
    std::list<Block*> blocks;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      blocks.swap(free_);
      by_size_.clear();
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
    void* data;  // page-aligned (kHugePage-aligned from kHugePage bytes on), within the mapping
    size_t bytes;
  };
  using FreeList = std::list<Block*>;

  static size_t round_up(size_t bytes) {
    const size_t page = bytes >= kHugePage ? kHugePage : kSmallPage;
    return (bytes + page - 1) / page * page;
  }

  Block* take(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto found = by_size_.find(bytes);
      if (found != by_size_.end()) {
        const FreeList::iterator newest = found->second.back();
        Block* block = *newest;
        found->second.pop_back();
        if (found->second.empty()) {
          by_size_.erase(found);
        }
        free_.erase(newest);
        cached_bytes_ -= bytes;
        return block;
      }
    }
    return map(bytes);
  }

  static Block* map(size_t bytes) {
#if defined(__linux__)
    const bool huge = bytes >= kHugePage;
    const size_t mapped_bytes = huge ? bytes + kHugePage : bytes;
    void* mapping = mmap(nullptr, mapped_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    TORCH_CHECK(mapping != MAP_FAILED, "seqkern: out of memory allocating ", bytes, " bytes");
    void* data = mapping;
    if (huge) {
      const uintptr_t aligned = (reinterpret_cast<uintptr_t>(mapping) + kHugePage - 1) & ~(uintptr_t{kHugePage} - 1);
      data = reinterpret_cast<void*>(aligned);
#if defined(MADV_HUGEPAGE)
      madvise(data, bytes, MADV_HUGEPAGE);
#endif
    }
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
    std::vector<Block*> evicted;
    {
      std::lock_guard<std::mutex> lock(allocator.mutex_);
      if (block->bytes <= kMaxCachedBytes) {
        allocator.free_.push_back(block);
        allocator.by_size_[block->bytes].push_back(std::prev(allocator.free_.end()));
        allocator.cached_bytes_ += block->bytes;
        block = nullptr;
        while (allocator.cached_bytes_ > kMaxCachedBytes) {
          Block* oldest = allocator.free_.front();
          // The least recently freed block overall is also the least recently freed of its size.
          auto same_size = allocator.by_size_.find(oldest->bytes);
          same_size->second.pop_front();
          if (same_size->second.empty()) {
            allocator.by_size_.erase(same_size);
          }
          allocator.free_.pop_front();
          allocator.cached_bytes_ -= oldest->bytes;
          evicted.push_back(oldest);
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
  FreeList free_;  // least recently freed first
  // The free blocks of each size, least recently freed first.
  std::unordered_map<size_t, std::deque<FreeList::iterator>> by_size_;
  size_t cached_bytes_ = 0;
};

inline at::Tensor empty_large(at::IntArrayRef sizes, const at::TensorOptions& options) {
  return at::Tensor(at::detail::empty_generic(sizes, &LargeBlockAllocator::get(),
                                              c10::DispatchKeySet(c10::DispatchKey::CPU),
                                              c10::typeMetaToScalarType(options.dtype()),
                                              options.memory_format_opt()));
}

// A contiguous tensor with the strides of one. is_contiguous() ignores the stride of a
// dimension of size 1, so contiguous() keeps whatever stride it has (an input of I = 1 or
// B = 1 from a transpose or a batch_first layout), and the kernels' views of it keep it too:
// x.view({T * B, I}) then has a column step that is not 1, which the products would read.
inline at::Tensor with_row_major_strides(const at::Tensor& contiguous) {
  const c10::DimVector strides = c10::contiguous_strides(contiguous.sizes());
  if (contiguous.strides() == at::IntArrayRef(strides)) {
    return contiguous;
  }
  return contiguous.as_strided(contiguous.sizes(), strides);
}

inline at::Tensor row_major(const at::Tensor& tensor) {
  return with_row_major_strides(tensor.contiguous());
}

// `tensor` itself where it is contiguous (with row-major strides), else a contiguous copy in
// a cached block (the gradient that autograd expands from output.sum()'s scalar).
inline at::Tensor contiguous_large(const at::Tensor& tensor) {
  if (tensor.is_contiguous()) {
    return with_row_major_strides(tensor);
  }
  at::Tensor copy = empty_large(tensor.sizes(), tensor.options());
  copy.copy_(tensor);
  return copy;
}

}  // namespace seqkern
