// Recurrent layer kernels (CPU): one layer, one direction, the whole sequence, forward
// and backpropagation through time. Contract (arguments, results, workspace layout):
// seqkern/ops/recurrent.py; the math: shared/SPEC.md.
//
// Dimension legend
//   T  time steps        B  batch             I  input features
//   H  hidden units      P  projection size   Hout = P with a projection, else H
//   G  gate blocks       GH = G * H (rows of w_ih and w_hh)
//   W  workspace width per step (see the contract)
//
// Forward: the input projection of all steps is one product (seqkern's kernel shared by rows,
// packed_rows_product; BLAS where the columns are not whole vectors), written straight into
// the gate columns of the workspace. Each step then runs one product h W_hh^T and one fused
// pointwise pass that overwrites those columns with the activated gates (two of each for
// the reset-before GRU and the projection, whose second product needs the first pass).
// Backward runs the steps in reverse: a fused pointwise pass and one product for the state
// gradient per step; the gradients of the weights and of the input are a few large
// products over all steps after the loop, on the same kernel as the projection.
//
// The per-step products run on the packed register-blocked kernel of recurrent_gemm.h. A
// single step (the cells) packs no weight: its products with the batch as rows are
// batch_rows_step_product's, its weight gradients BLAS's.
// When a step has enough work, the threads share the time loop as a team (see Split). Where
// the step weight fits a core's L2 cache and there are sequences enough, each thread owns a
// slice of the batch and runs its steps without ever waiting for the others. Otherwise each
// owns a slice of the hidden units (of every gate) through both the product and the
// pointwise pass, and they meet at one barrier per step (two where a second product
// follows a pass). A thread that waits too long at a barrier (another was descheduled on a
// busy machine) breaks the team up, and thread 0 runs the rest of the loop alone, with the
// same numbers. All loops work on raw pointers and allocate nothing.
#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <vector>

#include "memory.h"
#include "python_format.h"
#include "recurrent_gemm.h"
#include "recurrent_math.h"
#include "seqkern.h"

namespace seqkern {
namespace {

using at::Tensor;
using OptionalTensor = std::optional<Tensor>;

enum class Cell { RnnTanh, RnnRelu, Lstm, LstmCoupled, Gru, GruResetBefore };

struct CellName {
  const char* name;
  Cell cell;
  int64_t gates;
};

constexpr CellName kCells[] = {
    {"rnn_tanh", Cell::RnnTanh, 1}, {"rnn_relu", Cell::RnnRelu, 1}, {"lstm", Cell::Lstm, 4},
    {"lstm_coupled", Cell::LstmCoupled, 3}, {"gru", Cell::Gru, 3}, {"gru_reset_before", Cell::GruResetBefore, 3},
};

// Sizes and switches of one layer call, after its arguments have been checked.
struct Layer {
  Cell cell;
  int64_t steps, batch, input_size, hidden, out_size, gates, width;
  bool projection, peephole, reverse;

  bool lstm() const { return cell == Cell::Lstm || cell == Cell::LstmCoupled; }
  bool gru() const { return cell == Cell::Gru || cell == Cell::GruResetBefore; }
  int64_t gate_rows() const { return gates * hidden; }
};

void check_shape(const char* name, const Tensor& tensor, at::IntArrayRef expected) {
  TORCH_CHECK_VALUE(tensor.sizes() == expected, "seqkern recurrent layer: ", name, " must have shape ",
                    python_tuple(expected), ", got ", python_tuple(tensor.sizes()));
}

void check_like_input(const char* name, const Tensor& tensor, const Tensor& input) {
  TORCH_CHECK_VALUE(tensor.scalar_type() == input.scalar_type(), "seqkern recurrent layer: ", name,
                    " has dtype ", python_dtype(tensor.scalar_type()), ", but input has ",
                    python_dtype(input.scalar_type()));
  TORCH_CHECK_VALUE(tensor.device() == input.device(), "seqkern recurrent layer: ", name, " is on ",
                    tensor.device(), ", but input is on ", input.device());
}

// Mirrors check_layer_arguments in seqkern/ops/recurrent.py, so that a direct call into
// seqkern._C fails with the same messages instead of reading out of bounds.
Layer check_layer(const Tensor& input, const Tensor& h0, const OptionalTensor& c0, const Tensor& w_ih,
                  const Tensor& w_hh, const OptionalTensor& b_ih, const OptionalTensor& b_hh,
                  const OptionalTensor& w_hr, const OptionalTensor& w_peep, const OptionalTensor& lengths,
                  const std::string& cell, bool reverse, bool cpu_kernel = true) {
  const CellName* found = nullptr;
  for (const auto& entry : kCells) {
    if (cell == entry.name) {
      found = &entry;
    }
  }
  TORCH_CHECK_VALUE(found != nullptr, "seqkern recurrent layer: unknown cell '", cell,
                    "'; expected one of rnn_tanh, rnn_relu, lstm, lstm_coupled, gru, gru_reset_before");
  Layer layer{};
  layer.cell = found->cell;
  layer.gates = found->gates;
  layer.reverse = reverse;
  TORCH_CHECK_VALUE(input.dim() == 3, "seqkern recurrent layer: input must be 3-D (T, B, I), got ", input.dim(),
                    "-D");
  const auto dtype = input.scalar_type();
  if (cpu_kernel) {
    TORCH_CHECK_VALUE(input.device().is_cpu(),
                      "seqkern recurrent layer (C++ backend): input must be a CPU tensor, got ", input.device());
    TORCH_CHECK_VALUE(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kBFloat16 || dtype == at::kHalf,
                      "seqkern recurrent layer (C++ backend): input dtype ", python_dtype(dtype),
                      " is not supported; use float32, float64, bfloat16 or float16");
  } else {
    TORCH_CHECK_VALUE(at::isFloatingType(dtype), "seqkern recurrent layer: input must be floating point, got ",
                      python_dtype(dtype));
  }
  layer.steps = input.size(0);
  layer.batch = input.size(1);
  layer.input_size = input.size(2);
  TORCH_CHECK_VALUE(w_ih.dim() == 2 && w_ih.size(0) % layer.gates == 0, "seqkern recurrent layer: w_ih must be 2-D with a multiple of ",
                    layer.gates, " rows for cell '", cell, "', got ", python_tuple(w_ih.sizes()));
  layer.hidden = w_ih.size(0) / layer.gates;
  layer.out_size = layer.hidden;
  layer.projection = w_hr.has_value();
  if (layer.projection) {
    TORCH_CHECK_VALUE(layer.lstm(), "seqkern recurrent layer: w_hr (projection) is only supported for LSTM cells");
    TORCH_CHECK_VALUE(w_hr->dim() == 2 && w_hr->size(1) == layer.hidden, "seqkern recurrent layer: w_hr must have shape (P, ",
                      layer.hidden, "), got ", python_tuple(w_hr->sizes()));
    layer.out_size = w_hr->size(0);
  }
  const int64_t rows = layer.gate_rows();
  check_shape("w_ih", w_ih, {rows, layer.input_size});
  check_shape("w_hh", w_hh, {rows, layer.out_size});
  if (b_ih) {
    check_shape("b_ih", *b_ih, {rows});
  }
  if (b_hh) {
    check_shape("b_hh", *b_hh, {rows});
  }
  check_shape("h0", h0, {layer.batch, layer.out_size});
  if (layer.lstm()) {
    TORCH_CHECK_VALUE(c0.has_value(), "seqkern recurrent layer: cell '", cell, "' needs c0 of shape (", layer.batch,
                      ", ", layer.hidden, ")");
    check_shape("c0", *c0, {layer.batch, layer.hidden});
  } else {
    TORCH_CHECK_VALUE(!c0.has_value(), "seqkern recurrent layer: cell '", cell,
                      "' has no cell state, but c0 was given");
  }
  layer.peephole = w_peep.has_value();
  if (layer.peephole) {
    TORCH_CHECK_VALUE(layer.lstm(), "seqkern recurrent layer: w_peep (peephole) is only supported for LSTM cells");
    check_shape("w_peep", *w_peep, {layer.cell == Cell::Lstm ? 3 : 2, layer.hidden});
  }
  const std::pair<const char*, const OptionalTensor*> operands[] = {
      {"c0", &c0}, {"b_ih", &b_ih}, {"b_hh", &b_hh}, {"w_hr", &w_hr}, {"w_peep", &w_peep}};
  check_like_input("h0", h0, input);
  check_like_input("w_ih", w_ih, input);
  check_like_input("w_hh", w_hh, input);
  for (const auto& [name, operand] : operands) {
    if (operand->has_value()) {
      check_like_input(name, **operand, input);
    }
  }
  if (lengths) {
    TORCH_CHECK_VALUE(lengths->scalar_type() == at::kLong && lengths->dim() == 1 && lengths->size(0) == layer.batch,
                      "seqkern recurrent layer: lengths must be an int64 tensor of shape (", layer.batch, ",), got ",
                      python_dtype(lengths->scalar_type()), " ", python_tuple(lengths->sizes()));
    TORCH_CHECK_VALUE(lengths->device() == input.device(), "seqkern recurrent layer: lengths is on ",
                      lengths->device(), ", but input is on ", input.device());
  }
  if (layer.lstm()) {
    layer.width = (layer.gates + 1) * layer.hidden;
  } else if (layer.gru()) {
    layer.width = 4 * layer.hidden;
  } else {
    layer.width = layer.hidden;
  }
  return layer;
}

// Each sequence's length, checked to lie in [0, T]; T for every sequence without lengths.
std::vector<int64_t> sequence_lengths(const Layer& layer, const OptionalTensor& lengths) {
  std::vector<int64_t> result(layer.batch, layer.steps);
  if (lengths) {
    const Tensor values = lengths->contiguous();
    const int64_t* data = values.data_ptr<int64_t>();
    for (int64_t b = 0; b < layer.batch; ++b) {
      TORCH_CHECK_VALUE(data[b] >= 0 && data[b] <= layer.steps, "seqkern recurrent layer: lengths[", b, "] = ", data[b],
                        " is outside [0, ", layer.steps, "] (T = ", layer.steps, ")");
      result[b] = data[b];
    }
  }
  return result;
}

// ---------------------------------------------------------------- threads

// How the threads of a time loop share each step. By columns: each owns a slice of the
// hidden units (of every gate) of all sequences, and the team meets at a barrier after every
// product and pass, since each product reads the whole previous state. By rows: each owns a
// slice of the batch, whose sequences no other thread's work touches, so the threads run
// their steps without ever waiting for one another; but each streams the whole weight
// through its caches on every step, so rows need a weight that fits beside the rest in a
// core's L2 cache, and enough sequences to give each thread a tile's worth of rows.
enum class Split { Columns, Rows };

// Per-step products from this many multiply-adds on are shared by columns; below, the
// barriers cost more than the second thread saves. Even a one-sequence step of 64 units
// (2^14 for an LSTM) gains: each thread streams half the weight through its own caches,
// and the step is bound by that stream (AMD EPYC Zen 3, 2 threads: LSTM B = 1, H = 128 went
// from 0.67 to 0.54 ms forward, 1.64 to 1.22 ms training; H = 64 from 0.25 to 0.22 ms).
constexpr int64_t kTeamProduct = int64_t{1} << 14;
// Rows need far less work to pay: the team meets once per call, not per step.
constexpr int64_t kRowTeamProduct = int64_t{1} << 15;
constexpr int64_t kMinRowsPerThread = 4;
// Measured where rows and columns cross over, 2 threads, B = 16: with Zen 3's 512 KiB L2,
// rows still won at 768 KiB (GRU H = 256 forward: 12.7 vs 14.0 ms), tied at 576 KiB and
// lost a little at 1 MiB, the limit itself (LSTM H = 256: 17.6 vs 16.8 ms): the prefetchers
// keep a weight of up to about twice the L2 cache streaming well enough.
constexpr int64_t kRowSplitWeightBytes = int64_t{1} << 20;
// Hidden units per work item of the passes after the time loop.
constexpr int64_t kColumnBlock = 64;

// The split a team takes where both would do (tests force one: _set_team_split).
enum class SplitChoice { Auto, Columns, Rows };
std::atomic<SplitChoice> split_choice{SplitChoice::Auto};

struct TeamPlan {
  int threads;
  Split split;
};

// The team of a time loop whose step computes `step_product` multiply-adds over a step
// weight of `weight_bytes` (packed), for `batch` sequences of `hidden` units.
TeamPlan plan_team(int64_t batch, int64_t hidden, int64_t step_product, int64_t weight_bytes, int64_t lanes) {
  const int64_t threads = at::get_num_threads();
  const SplitChoice choice = split_choice.load(std::memory_order_relaxed);
  const bool rows = batch >= 2 * kMinRowsPerThread && step_product >= kRowTeamProduct &&
                    (choice == SplitChoice::Rows || (choice == SplitChoice::Auto && weight_bytes <= kRowSplitWeightBytes));
  if (rows) {
    return {static_cast<int>(std::min(threads, batch / kMinRowsPerThread)), Split::Rows};
  }
  if (step_product >= kTeamProduct && choice != SplitChoice::Rows) {
    return {static_cast<int>(std::max<int64_t>(1, std::min(threads, gemm::whole_vectors(hidden, lanes)))),
            Split::Columns};
  }
  return {1, Split::Columns};
}

// How long a thread may wait at a team's barriers for the others before the team breaks up
// (see Barrier): team_patience_ns, plus what going on alone would cost the rest of the loop,
// less what the thread has waited in it already. Going alone, one thread does every share
// of every phase left, so it costs (threads - 1) times the time those phases take the team,
// estimated from the phases so far. Waiting longer than that is never worth it, and waiting
// that long loses at most twice what the best choice would have (the ski-rental rule): a
// small step takes microseconds, and a loop of them breaks up soon after a thread is taken
// off its core (for milliseconds); a loop of big steps (a millisecond each, B = 64,
// H = 512) rides out a descheduled thread, where a break-up at its start doubled the time
// of the whole loop (LSTM training step 0.52 -> 0.82 s on a 2-vCPU VM). A team whose thread
// keeps being late breaks up once its waits add up to that cost. 0 breaks a team up at its
// first wait (tests).
constexpr int64_t kDefaultPatienceNs = 300 * 1000;
std::atomic<int64_t> team_patience_ns{kDefaultPatienceNs};
// Teams broken up so far (for tests).
std::atomic<int64_t> team_breakups{0};

// The barrier of a team's time loop. A team only moves at the pace of its slowest thread:
// on a machine with more busy threads than cores, one of them is often off its core for
// a scheduler slice (milliseconds), and then every step waits for it. So a thread that has
// waited too long (team_patience_ns) breaks the team up, and from then on one thread runs
// the rest of the loop alone. A waiting thread asks for the break-up with a bit beside the
// generation count, while that barrier is still shut; the last thread to arrive opens it by
// advancing the generation by one, or by two where the bit was set (and clears the bit). So
// every thread leaves a barrier with the same answer, even one that sees the state only
// after another thread has already asked to break up at the next barrier.
class Barrier {
 public:
  using Clock = std::chrono::steady_clock;

  // Waits for all `size` threads; false when the team has broken up at this barrier. The
  // team's loop began at `start` and has `phases_done` of its phases behind this barrier and
  // `phases_left` after it; this thread has waited `waited_ns` in it so far, and adds this
  // wait.
  bool wait(int size, Clock::time_point start, int64_t phases_done, int64_t phases_left, int64_t& waited_ns) {
    const uint64_t generation = state_.load(std::memory_order_relaxed) >> 1;
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) == size - 1) {
      arrived_.store(0, std::memory_order_relaxed);
      uint64_t shut = state_.load(std::memory_order_relaxed);
      while (!state_.compare_exchange_weak(shut, opened(shut), std::memory_order_acq_rel,
                                           std::memory_order_relaxed)) {
      }
      return (shut & 1) == 0;
    }
    const auto arrival = Clock::now();
    const int64_t patience = patience_ns(size, nanoseconds(arrival - start), phases_done, phases_left, waited_ns);
    int64_t waited = 0;
    bool gave_up = false;
    uint64_t state;
    for (int64_t round = 0; ((state = state_.load(std::memory_order_acquire)) >> 1) == generation; ++round) {
      if (round % kPausesPerLook != 0) {
        pause();
        continue;
      }
      waited = nanoseconds(Clock::now() - arrival);
      if (!gave_up && waited >= patience) {
        uint64_t shut = generation << 1;
        state_.compare_exchange_strong(shut, shut | 1, std::memory_order_acq_rel);
        gave_up = true;
      }
      // Only once the team has broken up: the late thread may need this core to finish its
      // share. Before, a yield on a busy machine can hand the core to another process for a
      // whole scheduler slice, and then the others wait for this thread.
      if (gave_up) {
        std::this_thread::yield();
      }
    }
    waited_ns += waited;
    return (state >> 1) == generation + 1;
  }

  // After a break-up, the threads that left sleep here until the one going on alone is done
  // (wake), rather than spin at OpenMP's barrier at the end of the region on a core it may
  // need.
  void sleep_until_woken() {
    std::unique_lock<std::mutex> lock(mutex_);
    woken_.wait(lock, [&] { return done_; });
  }
  void wake() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      done_ = true;
    }
    woken_.notify_all();
  }

  // How long a thread may wait at this barrier: see team_patience_ns.
  static int64_t patience_ns(int size, int64_t elapsed_ns, int64_t phases_done, int64_t phases_left,
                             int64_t waited_ns) {
    const int64_t base = team_patience_ns.load(std::memory_order_relaxed);
    if (base == 0) {
      return 0;
    }
    const int64_t phase_ns = std::max<int64_t>(0, elapsed_ns - waited_ns) / std::max<int64_t>(1, phases_done);
    const int64_t alone_cost_ns = (size - 1) * phase_ns * phases_left;
    return base + std::max<int64_t>(0, alone_cost_ns - waited_ns);
  }

 private:
  static constexpr int64_t kPausesPerLook = 16;

  static int64_t nanoseconds(Clock::duration time) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(time).count();
  }

  // The state that opens the barrier shut in state `shut`.
  static uint64_t opened(uint64_t shut) { return (shut & 1) ? shut + 3 : shut + 2; }

  static void pause() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }

  alignas(64) std::atomic<int> arrived_{0};
  alignas(64) std::atomic<uint64_t> state_{0};  // generation << 1 | break-up asked for
  std::mutex mutex_;
  std::condition_variable woken_;
  bool done_ = false;
};

// Batch rows [begin, end).
struct Rows {
  int64_t begin, end;
};

// A thread's slice of a step: share `id` of `count`, of the batch rows or of the columns.
struct Share {
  int id, count;
  Split split;

  // The batch rows [begin, end) of this share.
  Rows rows(int64_t batch) const {
    if (split == Split::Columns) {
      return {0, batch};
    }
    return {batch * id / count, batch * (id + 1) / count};
  }

  // The columns [begin, end) of `columns` that this share computes, in whole vectors of
  // `lanes`; the last share ends at the padded width.
  std::pair<int64_t, int64_t> of(int64_t columns, int64_t lanes) const {
    const int64_t vectors = gemm::whole_vectors(columns, lanes);
    if (split == Split::Rows) {
      return {0, vectors * lanes};
    }
    return {vectors * id / count * lanes, vectors * (id + 1) / count * lanes};
  }

  // The columns of a weight that this share packs: a slice of them whatever the split, so
  // that the threads share the packing. With columns, the very columns it computes; with
  // rows, where every thread computes all of them, whole panels (StepProduct::pack).
  std::pair<int64_t, int64_t> packs(int64_t columns, int64_t lanes) const {
    if (split == Split::Columns) {
      return of(columns, lanes);
    }
    const int64_t vectors = gemm::whole_vectors(columns, lanes);
    const int64_t panels = gemm::whole_vectors(vectors, gemm::kNarrowPanel);
    return {std::min(vectors, panels * id / count * gemm::kNarrowPanel) * lanes,
            std::min(vectors, panels * (id + 1) / count * gemm::kNarrowPanel) * lanes};
  }
};

// One thread of the team that runs a time loop. Each phase of a step (the work between two
// barriers) runs on this thread's share; once the team has broken up, thread 0 runs every
// share in turn, so each value is computed by the same code over the same range as
// before, and the results do not depend on whether or when the team broke up.
class Team {
 public:
  // `phases`: how many times the loop calls packed or sync, whether or not they meet.
  Team(int id, int size, Split split, int64_t phases, Barrier* barrier)
      : id_(id), size_(size), split_(split), phases_(phases), barrier_(barrier) {}

  template <typename Phase>
  void each_share(const Phase& phase) const {
    if (alone_) {
      for (int id = 0; id < size_; ++id) {
        phase(Share{id, size_, split_});
      }
    } else {
      phase(Share{id_, size_, split_});
    }
  }

  // Waits, where the split needs it, until what every thread wrote in this step is visible
  // to all. False when this thread must leave the loop: the team broke up and thread 0 goes
  // on alone.
  bool sync() {
    ++phases_done_;
    return split_ == Split::Rows || meet();
  }

  // Waits until the whole weight is packed: each thread packed a slice, but with rows each
  // reads all of it.
  bool packed() {
    ++phases_done_;
    return split_ == Split::Columns || meet();
  }

  // Called by every thread once its time loop is over.
  void finish() {
    if (alone_) {
      barrier_->wake();
    } else if (left_) {
      barrier_->sleep_until_woken();
    }
  }

 private:
  bool meet() {
    if (size_ == 1 || alone_ ||
        barrier_->wait(size_, start_, phases_done_, std::max<int64_t>(0, phases_ - phases_done_), waited_ns_)) {
      return true;
    }
    if (id_ != 0) {
      left_ = true;
      return false;
    }
    alone_ = true;
    team_breakups.fetch_add(1, std::memory_order_relaxed);
    return true;
  }

  int id_, size_;
  Split split_;
  int64_t phases_;
  Barrier* barrier_;
  Barrier::Clock::time_point start_ = Barrier::Clock::now();
  int64_t phases_done_ = 0, waited_ns_ = 0;
  bool alone_ = false, left_ = false;
};

// Runs pass(rows, j_begin, j_end) on a share's rows of `batch` and its columns of
// `columns`, clipped to the real (unpadded) width.
template <typename Pass>
void on_share(const Share& share, int64_t batch, int64_t columns, int64_t lanes, const Pass& pass) {
  const auto range = share.of(columns, lanes);
  const int64_t end = std::min(range.second, columns);
  if (range.first < end) {
    pass(share.rows(batch), range.first, end);
  }
}

// A thread packs its share of the columns of every step product that runs packed, into its
// own caches (with columns, the very columns it will compute).
template <typename scalar_t>
void pack_share(const Share& share, std::initializer_list<gemm::StepProduct<scalar_t>*> products) {
  for (gemm::StepProduct<scalar_t>* product : products) {
    if (product->packs()) {
      const auto columns = share.packs(product->block_cols(), gemm::Vector<scalar_t>::lanes);
      product->pack(columns.first, columns.second);
    }
  }
}

// The team of a time loop over the step products it packs; a single step runs alone.
template <typename scalar_t>
TeamPlan plan_loop_team(bool single_step, int64_t batch, int64_t hidden, int64_t step_product,
                        std::initializer_list<const gemm::StepProduct<scalar_t>*> products) {
  if (single_step) {
    return {1, Split::Columns};
  }
  int64_t weight_bytes = 0;
  for (const gemm::StepProduct<scalar_t>* product : products) {
    weight_bytes += product->packed_bytes();
  }
  return plan_team(batch, hidden, step_product, weight_bytes, gemm::Vector<scalar_t>::lanes);
}

// body(team) runs the loop; it calls team.packed() once and team.sync() after each of
// `phases_per_step` phases of every one of `steps` steps.
template <typename Body>
void run_team(const TeamPlan& plan, int64_t steps, int64_t phases_per_step, const Body& body) {
  const int64_t phases = 1 + steps * phases_per_step;
  if (plan.threads <= 1) {
    Team team(0, 1, Split::Columns, phases, nullptr);
    body(team);
    return;
  }
  Barrier barrier;
  // The team is as large as OpenMP makes it (one thread when nested in another region).
#pragma omp parallel num_threads(plan.threads)
  {
    Team team(omp_get_thread_num(), omp_get_num_threads(), plan.split, phases, &barrier);
    body(team);
    team.finish();
  }
}

// Rows of a product over all steps at a time (one chunk per work item), sized for the L1 and
// L2 caches: a chunk's rows of a stay close while every column panel of b passes.
constexpr int64_t kProductChunkRows = 96;
// packed_rows_product packs and runs b in blocks of columns of up to this many (packed)
// bytes, so that a block stays in a core's L2 cache while every chunk of rows passes it.
constexpr int64_t kRowsProductBlockBytes = int64_t{1} << 20;

// The most bytes of a transposed a that packed_rows_product copies into rows per thread.
constexpr int64_t kGatherBytes = int64_t{8} << 20;

// Whether packed_rows_product can compute c = a (M, K) . b (K, N): N whole vectors.
template <typename scalar_t>
bool rows_product_fits(const Tensor& b) {
  return b.size(1) % gemm::Vector<scalar_t>::lanes == 0;
}

// c (M, N) (+)= a (M, K) . b (K, N) on the step products' kernel: for each block of b's
// columns, the threads pack it together (a b with contiguous rows is read in place), then
// share the rows of a in chunks. BLAS splits such a product (the input projection of every
// step, and the input gradient; M = T B, K and N the layer's sizes) poorly between two
// threads. On Zen 3, two threads: at T B = 1600, K = N = 128, BLAS ran at 80 GFLOP/s and
// this at 120 to 170; at T B = 100, K = 128, N = 512, 72 to 125 against 164 (without the
// packing, which the transposed weights of the forward made costly until pack transposed in
// blocks). In the layer: forward 1.02 to 1.14x faster at B = 1 and 16, H = 64 and 128;
// backward 1.03 to 1.06x at B = 16, the same at B = 1. On Zen 4 (AVX-512), two threads,
// T B = 6400: K = 512, N = 2048 ran at 175 to 195 GFLOP/s against BLAS's 87 to 115, and
// K = 2048, N = 512 at 185 to 210 against 111. Every row sums its k in one order whatever its
// chunk, block or thread, so the result does not depend on the thread count.
// a, b: any strides (a transposed a, as in the weight gradients, reads k a row apart); c: any
// row stride.
template <typename scalar_t>
void packed_rows_product(const Tensor& a, const Tensor& b, const Tensor& c, bool accumulate) {
  const int64_t M = a.size(0), K = b.size(0), N = b.size(1), lanes = gemm::Vector<scalar_t>::lanes;
  if (M == 0 || N == 0) {
    return;
  }
  // Where K is so deep that an L2-sized block would be narrower than a wide panel, b is
  // one block: it streams from the L3 cache once per chunk of rows, which costs less than
  // streaming a once per block.
  int64_t block_vectors = kRowsProductBlockBytes / (K * lanes * static_cast<int64_t>(sizeof(scalar_t)));
  if (block_vectors < gemm::kWidePanel) {
    block_vectors = N / lanes;
  }
  // A b with contiguous rows (the weight gradients' inputs, the input gradient's weight) is
  // read where it lies: packing it was 4 to 6% of an LSTM or GRU backward at B = 16, H = 128
  // (Zen 5), which reading it in place made 3 to 8% faster. Only a b whose k lie apart
  // (the forward's transposed weight) is packed.
  const bool in_place = b.stride(1) == 1;
  std::vector<gemm::StepProduct<scalar_t>> blocks;
  const int64_t block_count = (N + block_vectors * lanes - 1) / (block_vectors * lanes);
  for (int64_t first = 0; !in_place && first < N; first += block_vectors * lanes) {
    blocks.emplace_back(b.narrow(1, first, std::min(block_vectors * lanes, N - first)), 1);
  }
  const scalar_t* b_data = b.data_ptr<scalar_t>();
  const int64_t ldb = b.stride(0);
  const int64_t threads = at::get_num_threads();
  // Chunks of at most kProductChunkRows, as many for every thread and of about one size, so
  // that the threads finish together: whole tiles of the kernel's tallest height, dealt out
  // evenly. At T B = 1600, 17 chunks of 96 rows gave one of two threads 864 rows and the
  // other 736; at M = 512 (an LSTM's weight gradients at H = 128), chunks of 90 rows gave
  // 270 and 242, where chunks of 84 to 90 give 258 and 254 (that backward 1-4% faster).
  constexpr int64_t kTileRows = gemm::max_tile_rows<gemm::kNarrowPanel>();
  const int64_t rounds = std::max<int64_t>(1, (M + kProductChunkRows * threads - 1) / (kProductChunkRows * threads));
  const int64_t tiles = (M + kTileRows - 1) / kTileRows;
  const int64_t chunks = std::min(tiles, threads * rounds);
  const int64_t chunk = (tiles + chunks - 1) / chunks * kTileRows;  // the most rows of a chunk
  // (first row, rows) of chunk `index`.
  const auto chunk_rows = [&](int64_t index) {
    const int64_t first = index * tiles / chunks * kTileRows;
    return std::pair<int64_t, int64_t>(first, std::min(M, (index + 1) * tiles / chunks * kTileRows) - first);
  };
  const scalar_t* a_data = a.data_ptr<scalar_t>();
  scalar_t* c_data = c.data_ptr<scalar_t>();
  const int64_t lda = a.stride(0), ldk = a.stride(1), ldc = c.stride(0);
  // A transposed a (the weight gradients': k a row apart) is read a chunk at a time into
  // contiguous rows: in place, every k of a tile's rows is another row of the matrix, and
  // the kernel ran at two thirds of its rate (Zen 4). Each thread's copy holds a chunk's
  // rows of all K; past kGatherBytes (very long sequences times large batches) a is read in
  // place instead, so that the copies never grow with T B beyond that.
  const bool gather = lda == 1 && ldk != 1 && chunk * K * static_cast<int64_t>(sizeof(scalar_t)) <= kGatherBytes;
  const int team = static_cast<int>(std::min(threads, chunks));
  // Each thread's copy, from the buffer cache: a fresh one costs page faults on every call.
  const Tensor rows_buffers = empty_large({gather ? team : 0, chunk, K}, a.options());
#pragma omp parallel num_threads(team)
  {
    scalar_t* rows_buffer = gather ? rows_buffers.data_ptr<scalar_t>() + omp_get_thread_num() * chunk * K : nullptr;
    for (int64_t index = 0; index < block_count; ++index) {
      const int64_t first_column = index * block_vectors * lanes;
      const int64_t width = std::min(block_vectors * lanes, N - first_column);
      scalar_t* c_block = c_data + first_column;
      if (!in_place) {
        gemm::StepProduct<scalar_t>& block = blocks[index];
        constexpr int64_t panel_width = gemm::kNarrowPanel * lanes;
#pragma omp for schedule(static)
        for (int64_t panel = 0; panel < (width + panel_width - 1) / panel_width; ++panel) {
          block.pack(panel * panel_width, std::min(width, (panel + 1) * panel_width));
        }
      }
      const auto run = [&](const scalar_t* a_rows, int64_t a_ld, int64_t a_ldk, int64_t first, int64_t rows) {
        if (in_place) {
          gemm::row_major_product<scalar_t>(rows, K, width, a_rows, a_ld, a_ldk, b_data + first_column, ldb,
                                            c_block + first * ldc, ldc, accumulate);
        } else {
          // A chunk of one row sums in the order of the others: chunks depend on the thread count.
          blocks[index].columns(a_rows, a_ld, c_block + first * ldc, ldc, rows, 0, width, accumulate, a_ldk, false);
        }
      };
      // Dynamic, so that a thread the scheduler takes off its core holds up one chunk only.
#pragma omp for schedule(dynamic)
      for (int64_t chunk_index = 0; chunk_index < chunks; ++chunk_index) {
        const auto [first, rows] = chunk_rows(chunk_index);
        if (gather) {
          gemm::gather_rows(a_data + first, ldk, rows, K, rows_buffer);
          run(rows_buffer, K, 1, first, rows);
        } else {
          run(a_data + first * lda, lda, ldk, first, rows);
        }
      }
    }
  }
}

// The smallest batch at which a single step's weight gradients (K = B, b read in place) run
// on packed_rows_product rather than BLAS. In the cells' backward op at H = 128 (Zen 5, two
// threads, noisy), B = 16 was 10 to 20% faster there (BLAS took 19 us for the (128, 16) by
// (16, 128) product, 27 GFLOP/s), B = 8 about 10%, B = 4 mixed and B = 1 15% slower.
constexpr int64_t kSingleStepRowsProductDepth = 8;

// c (+)= a . b over all steps: on packed_rows_product where b's columns are whole vectors,
// except where a single step (the cells) would pack b, which costs more than it saves, or
// is too shallow (above); BLAS otherwise.
template <typename scalar_t>
void steps_product(bool single_step, const Tensor& a, const Tensor& b, Tensor c, bool accumulate) {
  const bool rows_product = !single_step || (b.stride(1) == 1 && b.size(0) >= kSingleStepRowsProductDepth);
  if (rows_product && rows_product_fits<scalar_t>(b)) {
    packed_rows_product<scalar_t>(a, b, c, accumulate);
  } else {
    gemm::blas(a, b, c, accumulate);
  }
}

// The gate gradients of a whole backward pass are transposed once for both weight
// gradients (grad_w_ih and grad_w_hh) up to this many bytes; past it each product reads
// them transposed a chunk at a time (packed_rows_product), so that no copy grows with T B
// beyond that. Each product used to transpose every gate gradient itself: 10% of an LSTM
// backward at B = 16, H = 128 (Zen 5), which one transpose made 3-4% faster.
constexpr int64_t kTransposedGatesBytes = int64_t{64} << 20;

// to (cols, rows) = the transpose of from (rows, cols), contiguous both; the threads take
// blocks of `to`'s rows.
template <typename scalar_t>
void transpose(const scalar_t* from, int64_t rows, int64_t cols, scalar_t* to) {
  at::parallel_for(0, gemm::whole_vectors(cols, 8), kColumnBlock / 8, [&](int64_t begin, int64_t end) {
    const int64_t first = begin * 8, count = std::min(end * 8, cols) - first;
    gemm::gather_rows(from + first, cols, count, rows, to + first * rows);
  });
}

template <typename scalar_t>
void zero(scalar_t* data, int64_t count) {
  std::fill(data, data + count, scalar_t(0));
}

// Column sums of a (rows, cols) matrix with row stride ld: each column summed in row
// order by one thread, so the result does not depend on the thread count.
template <typename scalar_t>
void column_sums(const scalar_t* matrix, int64_t rows, int64_t cols, int64_t ld, scalar_t* sums) {
  at::parallel_for(0, cols, kColumnBlock, [&](int64_t begin, int64_t end) {
    zero(sums + begin, end - begin);
    for (int64_t row = 0; row < rows; ++row) {
      const scalar_t* values = matrix + row * ld;
#pragma omp simd
      for (int64_t j = begin; j < end; ++j) {
        sums[j] += values[j];
      }
    }
  });
}

// Raw pointers of a call's input tensors (all contiguous) that the time loops read.
template <typename scalar_t>
struct Operands {
  const scalar_t* h0;      // (B, Hout)
  const scalar_t* c0;      // (B, H) or null
  const scalar_t* w_peep;  // (3 or 2, H) or null
  const int64_t* lengths;  // (B,), T where none were given
};

template <typename scalar_t>
scalar_t* pointer_or_null(const Tensor& tensor) {
  return tensor.defined() ? tensor.data_ptr<scalar_t>() : nullptr;
}

// The order in which the steps run: sequence b runs the steps t < lengths[b], from t = 0
// up, or with reverse from t = lengths[b] - 1 down; the previous state of the first step
// it runs is its initial state.
struct TimeOrder {
  int64_t steps;
  bool reverse;
  int64_t time(int64_t s) const { return reverse ? steps - 1 - s : s; }
  // Time of the step run before step t, or -1 for none.
  int64_t previous(int64_t t) const { return reverse ? (t + 1 < steps ? t + 1 : -1) : t - 1; }
};

// Calls body(peephole, coupled, projection) with each flag of the LSTM variant as a
// std::bool_constant, so that the pointwise loops are compiled without branches.
template <typename Body>
void with_lstm_variant(const Layer& layer, const Body& body) {
  auto with_flag = [](bool flag, const auto& next) {
    flag ? next(std::true_type{}) : next(std::false_type{});
  };
  with_flag(layer.peephole, [&](auto peephole) {
    with_flag(layer.cell == Cell::LstmCoupled, [&](auto coupled) {
      with_flag(layer.projection, [&](auto projection) { body(peephole, coupled, projection); });
    });
  });
}

// ---------------------------------------------------------------- forward

template <typename scalar_t>
struct ForwardState {
  const Layer& layer;
  Operands<scalar_t> in;
  const scalar_t* bias;     // (GH,) b_ih + b_hh; for the reset-after GRU's n block b_in only
  const scalar_t* bias_hn;  // (H,) b_hn of the reset-after GRU
  scalar_t* output;         // (T, B, Hout)
  scalar_t* workspace;      // (T, B, W)
  scalar_t* c;              // (B, H) state, ends as c_n
  scalar_t* hidden_gates;   // (B, ld_gates) h W_hh^T of the current step, gate g at g * gate_ld
  scalar_t* cell_output;    // (B, H) o * tanh(c) before the projection
  scalar_t* projected;      // (B, ld_projected) (o * tanh(c)) W_hr^T
  scalar_t* reset_hidden;   // (B, ld_reset) (r * h) W_hn^T of the reset-before GRU
  int64_t ld_gates, gate_ld, ld_projected, ld_reset;

  bool active(int64_t t, int64_t b) const { return t < in.lengths[b]; }
  scalar_t* row(scalar_t* base, int64_t t, int64_t b, int64_t width) const {
    return base + (t * layer.batch + b) * width;
  }
  // Zeroes columns [j_begin, j_end) of every H-wide block of a workspace row.
  void zero_workspace(scalar_t* ws_row, int64_t j_begin, int64_t j_end) const {
    for (int64_t at = 0; at < layer.width; at += layer.hidden) {
      zero(ws_row + at + j_begin, j_end - j_begin);
    }
  }
};

// One step of the time loop: its time and the state buffers it reads and writes (the
// state is double-buffered, so that one thread's new h never meets another's product).
template <typename scalar_t>
struct StepStates {
  int64_t t;
  const scalar_t* h_prev;  // (B, Hout)
  scalar_t* h_next;        // (B, Hout)
};

// A sequence past its end keeps its state and writes zeros.
template <typename scalar_t>
void freeze(const StepStates<scalar_t>& step, int64_t b, int64_t width, scalar_t* out, int64_t j_begin,
            int64_t j_end) {
  zero(out + j_begin, j_end - j_begin);
  std::copy(step.h_prev + b * width + j_begin, step.h_prev + b * width + j_end, step.h_next + b * width + j_begin);
}

template <typename scalar_t, bool kPeephole, bool kCoupled, bool kProjection>
void lstm_forward_pointwise(const ForwardState<scalar_t>& s, const StepStates<scalar_t>& step, Rows rows, int64_t j_begin,
                            int64_t j_end) {
  const Layer& layer = s.layer;
  const int64_t H = layer.hidden, GH = layer.gate_rows(), Hout = layer.out_size, t = step.t;
  // Gate block offsets in torch's row order: (i, f, g, o), or (f, g, o) when coupled.
  const int64_t f_at = kCoupled ? 0 : H, g_at = kCoupled ? H : 2 * H, o_at = kCoupled ? 2 * H : 3 * H;
  const int64_t gate_ld = s.gate_ld;
  const int64_t f_hidden = kCoupled ? 0 : gate_ld, g_hidden = kCoupled ? gate_ld : 2 * gate_ld;
  const int64_t o_hidden = kCoupled ? 2 * gate_ld : 3 * gate_ld;
  // Peephole rows (i, f, o), or (f, o) when coupled.
  const scalar_t* peep_i = kPeephole ? s.in.w_peep : nullptr;
  const scalar_t* peep_f = kPeephole ? s.in.w_peep + (kCoupled ? 0 : H) : nullptr;
  const scalar_t* peep_o = kPeephole ? s.in.w_peep + (kCoupled ? H : 2 * H) : nullptr;
  const scalar_t* bias = s.bias;
  for (int64_t b = rows.begin; b < rows.end; ++b) {
    scalar_t* gates = s.row(s.workspace, t, b, layer.width);
    // o * tanh(c) is h itself, or the input of the projection.
    scalar_t* h_out = kProjection ? s.cell_output + b * H : s.row(s.output, t, b, Hout);
    if (!s.active(t, b)) {
      s.zero_workspace(gates, j_begin, j_end);
      if (kProjection) {
        zero(h_out + j_begin, j_end - j_begin);
      } else {
        freeze(step, b, Hout, h_out, j_begin, j_end);
      }
      continue;
    }
    const scalar_t* hidden = s.hidden_gates + b * s.ld_gates;
    scalar_t* c = s.c + b * H;
    scalar_t* h = step.h_next + b * Hout;
    scalar_t* c_saved = gates + GH;
#pragma omp simd
    for (int64_t j = j_begin; j < j_end; ++j) {
      const scalar_t c_prev = c[j];
      scalar_t pre_f = gates[f_at + j] + hidden[f_hidden + j] + bias[f_at + j];
      const scalar_t pre_g = gates[g_at + j] + hidden[g_hidden + j] + bias[g_at + j];
      scalar_t pre_o = gates[o_at + j] + hidden[o_hidden + j] + bias[o_at + j];
      if (kPeephole) {
        pre_f += peep_f[j] * c_prev;
      }
      const scalar_t f = math::sigmoid(pre_f);
      const scalar_t g = math::tanh(pre_g);
      scalar_t i;
      if (kCoupled) {
        i = scalar_t(1) - f;
      } else {
        scalar_t pre_i = gates[j] + hidden[j] + bias[j];
        if (kPeephole) {
          pre_i += peep_i[j] * c_prev;
        }
        i = math::sigmoid(pre_i);
        gates[j] = i;
      }
      const scalar_t c_new = f * c_prev + i * g;
      if (kPeephole) {
        pre_o += peep_o[j] * c_new;
      }
      const scalar_t o = math::sigmoid(pre_o);
      const scalar_t h_new = o * math::tanh(c_new);
      gates[f_at + j] = f;
      gates[g_at + j] = g;
      gates[o_at + j] = o;
      c_saved[j] = c_new;
      c[j] = c_new;
      h_out[j] = h_new;
      if (!kProjection) {
        h[j] = h_new;
      }
    }
  }
}

template <typename scalar_t>
void lstm_forward_pointwise(const ForwardState<scalar_t>& s, const StepStates<scalar_t>& step, Rows rows, int64_t j_begin,
                            int64_t j_end) {
  with_lstm_variant(s.layer, [&](auto peephole, auto coupled, auto projection) {
    lstm_forward_pointwise<scalar_t, decltype(peephole)::value, decltype(coupled)::value,
                           decltype(projection)::value>(s, step, rows, j_begin, j_end);
  });
}

// The projected h of every running sequence becomes its output and its state.
template <typename scalar_t>
void projection_forward_pointwise(const ForwardState<scalar_t>& s, const StepStates<scalar_t>& step,
                                  Rows rows, int64_t j_begin, int64_t j_end) {
  const int64_t P = s.layer.out_size;
  for (int64_t b = rows.begin; b < rows.end; ++b) {
    scalar_t* out = s.row(s.output, step.t, b, P);
    if (!s.active(step.t, b)) {
      freeze(step, b, P, out, j_begin, j_end);
      continue;
    }
    const scalar_t* projected = s.projected + b * s.ld_projected;
    std::copy(projected + j_begin, projected + j_end, out + j_begin);
    std::copy(projected + j_begin, projected + j_end, step.h_next + b * P + j_begin);
  }
}

template <typename scalar_t>
void gru_forward_pointwise(const ForwardState<scalar_t>& s, const StepStates<scalar_t>& step, Rows rows, int64_t j_begin,
                           int64_t j_end) {
  const Layer& layer = s.layer;
  const int64_t H = layer.hidden, gate_ld = s.gate_ld, t = step.t;
  const scalar_t* bias = s.bias;
  const scalar_t* bias_hn = s.bias_hn;
  for (int64_t b = rows.begin; b < rows.end; ++b) {
    scalar_t* gates = s.row(s.workspace, t, b, layer.width);
    scalar_t* out = s.row(s.output, t, b, H);
    if (!s.active(t, b)) {
      s.zero_workspace(gates, j_begin, j_end);
      freeze(step, b, H, out, j_begin, j_end);
      continue;
    }
    const scalar_t* hidden = s.hidden_gates + b * s.ld_gates;
    const scalar_t* h_prev = step.h_prev + b * H;
    scalar_t* h = step.h_next + b * H;
#pragma omp simd
    for (int64_t j = j_begin; j < j_end; ++j) {
      const scalar_t r = math::sigmoid(gates[j] + hidden[j] + bias[j]);
      const scalar_t z = math::sigmoid(gates[H + j] + hidden[gate_ld + j] + bias[H + j]);
      const scalar_t hn = hidden[2 * gate_ld + j] + bias_hn[j];
      const scalar_t n = math::tanh(gates[2 * H + j] + bias[2 * H + j] + r * hn);
      const scalar_t h_new = n + z * (h_prev[j] - n);
      gates[j] = r;
      gates[H + j] = z;
      gates[2 * H + j] = n;
      gates[3 * H + j] = hn;
      h[j] = h_new;
      out[j] = h_new;
    }
  }
}

// The reset-before GRU's first pass: r, z and r * h, the input of the n block's product.
template <typename scalar_t>
void gru_reset_gates_pointwise(const ForwardState<scalar_t>& s, const StepStates<scalar_t>& step, Rows rows, int64_t j_begin,
                               int64_t j_end) {
  const Layer& layer = s.layer;
  const int64_t H = layer.hidden, gate_ld = s.gate_ld, t = step.t;
  const scalar_t* bias = s.bias;
  for (int64_t b = rows.begin; b < rows.end; ++b) {
    scalar_t* gates = s.row(s.workspace, t, b, layer.width);
    if (!s.active(t, b)) {
      s.zero_workspace(gates, j_begin, j_end);
      freeze(step, b, H, s.row(s.output, t, b, H), j_begin, j_end);
      continue;
    }
    const scalar_t* hidden = s.hidden_gates + b * s.ld_gates;
    const scalar_t* h_prev = step.h_prev + b * H;
#pragma omp simd
    for (int64_t j = j_begin; j < j_end; ++j) {
      const scalar_t r = math::sigmoid(gates[j] + hidden[j] + bias[j]);
      gates[j] = r;
      gates[H + j] = math::sigmoid(gates[H + j] + hidden[gate_ld + j] + bias[H + j]);
      gates[3 * H + j] = r * h_prev[j];
    }
  }
}

// The reset-before GRU's second pass, after (r * h) W_hn^T: n and the new h.
template <typename scalar_t>
void gru_reset_before_pointwise(const ForwardState<scalar_t>& s, const StepStates<scalar_t>& step, Rows rows, int64_t j_begin,
                                int64_t j_end) {
  const Layer& layer = s.layer;
  const int64_t H = layer.hidden, t = step.t;
  const scalar_t* bias = s.bias;
  for (int64_t b = rows.begin; b < rows.end; ++b) {
    if (!s.active(t, b)) {
      continue;
    }
    scalar_t* gates = s.row(s.workspace, t, b, layer.width);
    scalar_t* out = s.row(s.output, t, b, H);
    const scalar_t* reset_hidden = s.reset_hidden + b * s.ld_reset;
    const scalar_t* h_prev = step.h_prev + b * H;
    scalar_t* h = step.h_next + b * H;
#pragma omp simd
    for (int64_t j = j_begin; j < j_end; ++j) {
      const scalar_t n = math::tanh(gates[2 * H + j] + reset_hidden[j] + bias[2 * H + j]);
      const scalar_t h_new = n + gates[H + j] * (h_prev[j] - n);
      gates[2 * H + j] = n;
      h[j] = h_new;
      out[j] = h_new;
    }
  }
}

template <typename scalar_t, bool kRelu>
void rnn_forward_pointwise(const ForwardState<scalar_t>& s, const StepStates<scalar_t>& step, Rows rows, int64_t j_begin,
                           int64_t j_end) {
  const Layer& layer = s.layer;
  const int64_t H = layer.hidden, t = step.t;
  const scalar_t* bias = s.bias;
  for (int64_t b = rows.begin; b < rows.end; ++b) {
    scalar_t* saved = s.row(s.workspace, t, b, H);
    scalar_t* out = s.row(s.output, t, b, H);
    if (!s.active(t, b)) {
      zero(saved + j_begin, j_end - j_begin);
      freeze(step, b, H, out, j_begin, j_end);
      continue;
    }
    const scalar_t* hidden = s.hidden_gates + b * s.ld_gates;
    scalar_t* h = step.h_next + b * H;
#pragma omp simd
    for (int64_t j = j_begin; j < j_end; ++j) {
      const scalar_t pre = saved[j] + hidden[j] + bias[j];
      const scalar_t h_new = kRelu ? math::relu(pre) : math::tanh(pre);
      saved[j] = h_new;
      h[j] = h_new;
      out[j] = h_new;
    }
  }
}

// (b_ih + b_hh), and the reset-after GRU's b_hn kept apart (it sits inside
// r * (h W_hn^T + b_hn)), so the n block gets b_in only.
template <typename scalar_t>
std::pair<std::vector<scalar_t>, std::vector<scalar_t>> combined_bias(const Layer& layer, const OptionalTensor& b_ih,
                                                                      const OptionalTensor& b_hh) {
  const int64_t GH = layer.gate_rows(), H = layer.hidden;
  std::vector<scalar_t> bias(GH, scalar_t(0)), bias_hn(H, scalar_t(0));
  if (b_ih) {
    const Tensor values = b_ih->contiguous();
    const scalar_t* data = values.data_ptr<scalar_t>();
    for (int64_t i = 0; i < GH; ++i) {
      bias[i] += data[i];
    }
  }
  if (b_hh) {
    const Tensor values = b_hh->contiguous();
    const scalar_t* data = values.data_ptr<scalar_t>();
    const int64_t shared = layer.cell == Cell::Gru ? 2 * H : GH;
    for (int64_t i = 0; i < shared; ++i) {
      bias[i] += data[i];
    }
    if (layer.cell == Cell::Gru) {
      std::copy(data + 2 * H, data + 3 * H, bias_hn.begin());
    }
  }
  return {std::move(bias), std::move(bias_hn)};
}

// A zeroed (rows, columns) scratch matrix, filled without a trip through the dispatcher; none
// (an undefined tensor) for a product the cell does not have (no columns): a single step
// takes a few microseconds, and each allocation is a tenth of one.
template <typename scalar_t>
Tensor scratch(int64_t rows, int64_t columns, const at::TensorOptions& options) {
  if (columns == 0) {
    return Tensor();
  }
  Tensor matrix = at::empty({rows, columns}, options);
  zero(matrix.data_ptr<scalar_t>(), rows * columns);
  return matrix;
}

// A (rows, columns) copy of a tensor of that shape, made without the dispatcher.
template <typename scalar_t>
Tensor copy_of(const Tensor& source, const at::TensorOptions& options) {
  const Tensor values = source.contiguous();
  Tensor copy = at::empty(values.sizes(), options);
  std::copy_n(values.data_ptr<scalar_t>(), values.numel(), copy.data_ptr<scalar_t>());
  return copy;
}

template <typename scalar_t>
std::tuple<Tensor, Tensor, Tensor, Tensor> forward_kernel(const Layer& layer, const Tensor& input, const Tensor& h0,
                                                          const OptionalTensor& c0, const Tensor& w_ih,
                                                          const Tensor& w_hh, const OptionalTensor& b_ih,
                                                          const OptionalTensor& b_hh, const OptionalTensor& w_hr,
                                                          const OptionalTensor& w_peep,
                                                          const std::vector<int64_t>& lengths) {
  const int64_t T = layer.steps, B = layer.batch, I = layer.input_size, H = layer.hidden;
  const int64_t GH = layer.gate_rows(), Hout = layer.out_size, W = layer.width;
  const int64_t lanes = gemm::Vector<scalar_t>::lanes;
  const auto options = input.options();
  // Contiguous weights too: BLAS takes other paths (other roundings) for other layouts.
  const Tensor x = contiguous_large(input), w_ih_c = row_major(w_ih), w_hh_c = row_major(w_hh);
  const Tensor w_peep_c = w_peep ? row_major(*w_peep) : Tensor();
  Tensor output = empty_large({T, B, Hout}, options);
  Tensor workspace = empty_large({T, B, W}, options);
  // The state is double-buffered: step `index` reads buffer index % 2 and writes the other,
  // except that the first step reads h0 where it lies; the last step writes h_n (without
  // steps, h_n is h0). So a single step needs one buffer.
  const Tensor h0_c = row_major(h0);
  const Tensor h_n = T == 0 ? copy_of<scalar_t>(h0_c, options) : at::empty({B, Hout}, options);
  const Tensor h_other = T > 1 ? at::empty({B, Hout}, options) : Tensor();
  scalar_t* const last_state = h_n.data_ptr<scalar_t>();
  scalar_t* const other_state = pointer_or_null<scalar_t>(h_other);
  scalar_t* const h_buffers[2] = {T % 2 == 0 ? last_state : other_state, T % 2 == 0 ? other_state : last_state};
  Tensor c_n = layer.lstm() ? copy_of<scalar_t>(*c0, options) : at::empty({0}, options);
  const auto [bias, bias_hn] = combined_bias<scalar_t>(layer, b_ih, b_hh);

  // The reset-before GRU's step product covers r and z only; n's comes after the reset.
  const int64_t step_gates = layer.cell == Cell::GruResetBefore ? 2 : layer.gates;
  const int64_t step_work = B * Hout * GH + (layer.projection ? B * H * Hout : 0);
  // A single step (the cells) runs its products once, without packing the weight.
  const bool single_step = T == 1;
  gemm::StepProduct<scalar_t> recurrent(w_hh_c.narrow(0, 0, step_gates * H).t(), step_gates, !single_step);
  gemm::StepProduct<scalar_t> projection, reset_product;
  if (layer.projection) {
    projection = gemm::StepProduct<scalar_t>(w_hr->t(), 1);
  }
  if (layer.cell == Cell::GruResetBefore) {
    reset_product = gemm::StepProduct<scalar_t>(w_hh_c.narrow(0, 2 * H, H).t(), 1);
  }
  Tensor hidden_gates = scratch<scalar_t>(B, recurrent.width(), options);
  Tensor cell_output = scratch<scalar_t>(B, layer.projection ? H : 0, options);
  Tensor projected = scratch<scalar_t>(B, projection.width(), options);
  Tensor reset_hidden = scratch<scalar_t>(B, reset_product.width(), options);

  const ForwardState<scalar_t> s{layer,
                                 {nullptr, nullptr, pointer_or_null<scalar_t>(w_peep_c), lengths.data()},
                                 bias.data(),
                                 bias_hn.data(),
                                 output.data_ptr<scalar_t>(),
                                 workspace.data_ptr<scalar_t>(),
                                 layer.lstm() ? c_n.data_ptr<scalar_t>() : nullptr,
                                 pointer_or_null<scalar_t>(hidden_gates),
                                 pointer_or_null<scalar_t>(cell_output),
                                 pointer_or_null<scalar_t>(projected),
                                 pointer_or_null<scalar_t>(reset_hidden),
                                 recurrent.width(),
                                 recurrent.block_ld(),
                                 projection.width(),
                                 reset_product.width()};

  // Input projection of every step, into the gate columns of the workspace.
  Tensor gate_columns = workspace.view({T * B, W}).narrow(1, 0, GH);
  if (single_step) {
    gemm::batch_rows_step_product<scalar_t>(x.view({B, I}), w_ih_c, gate_columns.data_ptr<scalar_t>(), W, false, GH,
                                            GH);
  } else {
    steps_product<scalar_t>(single_step, x.view({T * B, I}), w_ih_c.t(), gate_columns, false);
  }

  const TimeOrder order{T, layer.reverse};
  const auto pack = [&](const Share& share) { pack_share(share, {&recurrent, &projection, &reset_product}); };
  // The projection and the reset-before GRU's n product read the pass of every share.
  const bool second_product = layer.projection || layer.cell == Cell::GruResetBefore;
  if (single_step) {
    gemm::batch_rows_step_product<scalar_t>(h0_c, w_hh_c.narrow(0, 0, step_gates * H), s.hidden_gates, s.ld_gates,
                                            false, H, recurrent.block_ld());
  }
  const TeamPlan plan = plan_loop_team(single_step, B, H, step_work, {&recurrent, &projection, &reset_product});
  run_team(plan, T, second_product ? 2 : 1, [&](Team& team) {
    team.each_share(pack);
    if (!team.packed()) {
      return;
    }
    for (int64_t index = 0; index < T; ++index) {
      const StepStates<scalar_t> step{order.time(index), index == 0 ? h0_c.data_ptr<scalar_t>() : h_buffers[index % 2],
                                      h_buffers[(index + 1) % 2]};
      const int64_t t = step.t;
      team.each_share([&](const Share& share) {
        const auto units = share.of(H, lanes);
        const Rows rows = share.rows(B);
        if (!single_step) {
          recurrent.columns(step.h_prev + rows.begin * Hout, Hout, s.hidden_gates + rows.begin * s.ld_gates,
                            s.ld_gates, rows.end - rows.begin, units.first, units.second, false);
        }
        const auto pass = [&](const auto& pointwise) { on_share(share, B, H, lanes, pointwise); };
        switch (layer.cell) {
          case Cell::Lstm:
          case Cell::LstmCoupled:
            pass([&](Rows r, int64_t j0, int64_t j1) { lstm_forward_pointwise(s, step, r, j0, j1); });
            break;
          case Cell::Gru:
            pass([&](Rows r, int64_t j0, int64_t j1) { gru_forward_pointwise(s, step, r, j0, j1); });
            break;
          case Cell::GruResetBefore:
            pass([&](Rows r, int64_t j0, int64_t j1) { gru_reset_gates_pointwise(s, step, r, j0, j1); });
            break;
          case Cell::RnnTanh:
            pass([&](Rows r, int64_t j0, int64_t j1) { rnn_forward_pointwise<scalar_t, false>(s, step, r, j0, j1); });
            break;
          case Cell::RnnRelu:
            pass([&](Rows r, int64_t j0, int64_t j1) { rnn_forward_pointwise<scalar_t, true>(s, step, r, j0, j1); });
            break;
        }
      });
      if (second_product) {
        if (!team.sync()) {
          return;
        }
        team.each_share([&](const Share& share) {
          const Rows rows = share.rows(B);
          const int64_t M = rows.end - rows.begin;
          if (layer.projection) {
            const auto outs = share.of(Hout, lanes);
            projection.columns(s.cell_output + rows.begin * H, H, s.projected + rows.begin * s.ld_projected,
                               s.ld_projected, M, outs.first, outs.second, false);
            on_share(share, B, Hout, lanes,
                     [&](Rows r, int64_t j0, int64_t j1) { projection_forward_pointwise(s, step, r, j0, j1); });
          } else {
            const auto units = share.of(H, lanes);
            reset_product.columns(s.row(s.workspace, t, rows.begin, W) + 3 * H, W,
                                  s.reset_hidden + rows.begin * s.ld_reset, s.ld_reset, M, units.first, units.second,
                                  false);
            on_share(share, B, H, lanes,
                     [&](Rows r, int64_t j0, int64_t j1) { gru_reset_before_pointwise(s, step, r, j0, j1); });
          }
        });
      }
      if (!team.sync()) {
        return;
      }
    }
  });
  return {output, h_n, c_n, workspace};
}

// ---------------------------------------------------------------- backward

template <typename scalar_t>
struct BackwardState {
  const Layer& layer;
  Operands<scalar_t> in;
  const scalar_t* grad_output;  // (T, B, Hout)
  const scalar_t* output;       // (T, B, Hout)
  const scalar_t* workspace;    // (T, B, W)
  scalar_t* grad_h;      // (B, ld_h) gradient of the state after the step; ends as grad_h0
  scalar_t* grad_c;      // (B, H); ends as grad_c0
  scalar_t* grad_gates;  // (T, B, GH) gradient of the hidden side's pre-activations
  scalar_t* grad_x_n;    // (T, B, H) the reset-after GRU's n block on the input side
  scalar_t* grad_h_out;  // (T, B, P) gradient of each projected h
  scalar_t* cell_out;    // (T, B, H) o * tanh(c) of each step (projection only)
  scalar_t* grad_cell;   // (B, ld_cell) gradient of o * tanh(c), or of r * h (reset-before GRU)
  int64_t ld_h, ld_cell;
  TimeOrder order;

  bool active(int64_t t, int64_t b) const { return t < in.lengths[b]; }
  int64_t offset(int64_t t, int64_t b, int64_t width) const { return (t * layer.batch + b) * width; }
  // The state a step of sequence b started from: the previous step's, or the initial state.
  const scalar_t* previous_h(int64_t t, int64_t b) const {
    const int64_t p = order.previous(t);
    return (p >= 0 && active(p, b)) ? output + offset(p, b, layer.out_size) : in.h0 + b * layer.out_size;
  }
  const scalar_t* previous_c(int64_t t, int64_t b) const {
    const int64_t p = order.previous(t);
    return (p >= 0 && active(p, b)) ? workspace + offset(p, b, layer.width) + layer.gate_rows()
                                    : in.c0 + b * layer.hidden;
  }
  // A step past a sequence's end passes its state gradient on untouched and has no gate
  // gradients.
  void no_gate_gradients(int64_t t, int64_t b, int64_t j_begin, int64_t j_end) const {
    scalar_t* grad_pre = grad_gates + offset(t, b, layer.gate_rows());
    for (int64_t at = 0; at < layer.gate_rows(); at += layer.hidden) {
      zero(grad_pre + at + j_begin, j_end - j_begin);
    }
  }
};

template <typename scalar_t, bool kPeephole, bool kCoupled, bool kProjection>
void lstm_backward_pointwise(const BackwardState<scalar_t>& s, int64_t t, Rows rows, int64_t j_begin, int64_t j_end) {
  const Layer& layer = s.layer;
  const int64_t H = layer.hidden, GH = layer.gate_rows(), Hout = layer.out_size;
  const int64_t f_at = kCoupled ? 0 : H, g_at = kCoupled ? H : 2 * H, o_at = kCoupled ? 2 * H : 3 * H;
  const scalar_t* peep_i = kPeephole ? s.in.w_peep : nullptr;
  const scalar_t* peep_f = kPeephole ? s.in.w_peep + (kCoupled ? 0 : H) : nullptr;
  const scalar_t* peep_o = kPeephole ? s.in.w_peep + (kCoupled ? H : 2 * H) : nullptr;
  for (int64_t b = rows.begin; b < rows.end; ++b) {
    scalar_t* cell_out = kProjection ? s.cell_out + s.offset(t, b, H) : nullptr;
    if (!s.active(t, b)) {
      s.no_gate_gradients(t, b, j_begin, j_end);
      if (kProjection) {
        zero(cell_out + j_begin, j_end - j_begin);
      }
      continue;
    }
    scalar_t* grad_pre = s.grad_gates + s.offset(t, b, GH);
    const scalar_t* gates = s.workspace + s.offset(t, b, layer.width);
    const scalar_t* c_new = gates + GH;
    const scalar_t* c_prev = s.previous_c(t, b);
    const scalar_t* grad_out = s.grad_output + s.offset(t, b, Hout);
    scalar_t* grad_h = s.grad_h + b * s.ld_h;
    // Under a projection the gradient of o * tanh(c) has come through W_hr already.
    const scalar_t* grad_cell = kProjection ? s.grad_cell + b * s.ld_cell : nullptr;
    scalar_t* grad_c = s.grad_c + b * H;
#pragma omp simd
    for (int64_t j = j_begin; j < j_end; ++j) {
      const scalar_t dh = kProjection ? grad_cell[j] : grad_h[j] + grad_out[j];
      const scalar_t f = gates[f_at + j], g = gates[g_at + j], o = gates[o_at + j];
      const scalar_t i = kCoupled ? scalar_t(1) - f : gates[j];
      const scalar_t tanh_c = math::tanh(c_new[j]);
      const scalar_t grad_o = dh * tanh_c * o * (scalar_t(1) - o);
      scalar_t dc = grad_c[j] + dh * o * (scalar_t(1) - tanh_c * tanh_c);
      if (kPeephole) {
        dc += grad_o * peep_o[j];
      }
      const scalar_t grad_f = dc * (kCoupled ? c_prev[j] - g : c_prev[j]) * f * (scalar_t(1) - f);
      const scalar_t grad_g = dc * i * (scalar_t(1) - g * g);
      scalar_t dc_prev = dc * f;
      if (!kCoupled) {
        const scalar_t grad_i = dc * g * i * (scalar_t(1) - i);
        grad_pre[j] = grad_i;
        if (kPeephole) {
          dc_prev += grad_i * peep_i[j];
        }
      }
      if (kPeephole) {
        dc_prev += grad_f * peep_f[j];
      }
      grad_pre[f_at + j] = grad_f;
      grad_pre[g_at + j] = grad_g;
      grad_pre[o_at + j] = grad_o;
      grad_c[j] = dc_prev;
      if (kProjection) {
        cell_out[j] = o * tanh_c;
      } else {
        grad_h[j] = scalar_t(0);
      }
    }
  }
}

template <typename scalar_t>
void lstm_backward_pointwise(const BackwardState<scalar_t>& s, int64_t t, Rows rows, int64_t j_begin, int64_t j_end) {
  with_lstm_variant(s.layer, [&](auto peephole, auto coupled, auto projection) {
    lstm_backward_pointwise<scalar_t, decltype(peephole)::value, decltype(coupled)::value,
                            decltype(projection)::value>(s, t, rows, j_begin, j_end);
  });
}

// Gradient of this step's projected h (kept for grad_w_hr); the state gradient restarts
// from zero, to be filled by the recurrent product.
template <typename scalar_t>
void projection_backward_pointwise(const BackwardState<scalar_t>& s, int64_t t, Rows rows, int64_t j_begin, int64_t j_end) {
  const int64_t P = s.layer.out_size;
  for (int64_t b = rows.begin; b < rows.end; ++b) {
    scalar_t* grad_h_out = s.grad_h_out + s.offset(t, b, P);
    if (!s.active(t, b)) {
      zero(grad_h_out + j_begin, j_end - j_begin);
      continue;
    }
    scalar_t* grad_h = s.grad_h + b * s.ld_h;
    const scalar_t* grad_out = s.grad_output + s.offset(t, b, P);
#pragma omp simd
    for (int64_t j = j_begin; j < j_end; ++j) {
      grad_h_out[j] = grad_h[j] + grad_out[j];
      grad_h[j] = scalar_t(0);
    }
  }
}

template <typename scalar_t>
void gru_backward_pointwise(const BackwardState<scalar_t>& s, int64_t t, Rows rows, int64_t j_begin, int64_t j_end) {
  const Layer& layer = s.layer;
  const int64_t H = layer.hidden, GH = layer.gate_rows();
  for (int64_t b = rows.begin; b < rows.end; ++b) {
    scalar_t* grad_x_n = s.grad_x_n + s.offset(t, b, H);
    if (!s.active(t, b)) {
      s.no_gate_gradients(t, b, j_begin, j_end);
      zero(grad_x_n + j_begin, j_end - j_begin);
      continue;
    }
    scalar_t* grad_pre = s.grad_gates + s.offset(t, b, GH);
    const scalar_t* gates = s.workspace + s.offset(t, b, layer.width);
    const scalar_t* h_prev = s.previous_h(t, b);
    const scalar_t* grad_out = s.grad_output + s.offset(t, b, H);
    scalar_t* grad_h = s.grad_h + b * s.ld_h;
#pragma omp simd
    for (int64_t j = j_begin; j < j_end; ++j) {
      const scalar_t r = gates[j], z = gates[H + j], n = gates[2 * H + j], hn = gates[3 * H + j];
      const scalar_t dh = grad_h[j] + grad_out[j];
      const scalar_t grad_n = dh * (scalar_t(1) - z) * (scalar_t(1) - n * n);
      grad_pre[j] = grad_n * hn * r * (scalar_t(1) - r);
      grad_pre[H + j] = dh * (h_prev[j] - n) * z * (scalar_t(1) - z);
      grad_pre[2 * H + j] = grad_n * r;
      grad_x_n[j] = grad_n;
      grad_h[j] = dh * z;
    }
  }
}

// The reset-before GRU's first pass: z and n, and h's direct share (z * dh).
template <typename scalar_t>
void gru_update_backward_pointwise(const BackwardState<scalar_t>& s, int64_t t, Rows rows, int64_t j_begin, int64_t j_end) {
  const Layer& layer = s.layer;
  const int64_t H = layer.hidden, GH = layer.gate_rows();
  for (int64_t b = rows.begin; b < rows.end; ++b) {
    if (!s.active(t, b)) {
      s.no_gate_gradients(t, b, j_begin, j_end);
      continue;
    }
    scalar_t* grad_pre = s.grad_gates + s.offset(t, b, GH);
    const scalar_t* gates = s.workspace + s.offset(t, b, layer.width);
    const scalar_t* h_prev = s.previous_h(t, b);
    const scalar_t* grad_out = s.grad_output + s.offset(t, b, H);
    scalar_t* grad_h = s.grad_h + b * s.ld_h;
#pragma omp simd
    for (int64_t j = j_begin; j < j_end; ++j) {
      const scalar_t z = gates[H + j], n = gates[2 * H + j];
      const scalar_t dh = grad_h[j] + grad_out[j];
      grad_pre[H + j] = dh * (h_prev[j] - n) * z * (scalar_t(1) - z);
      grad_pre[2 * H + j] = dh * (scalar_t(1) - z) * (scalar_t(1) - n * n);
      grad_h[j] = dh * z;
    }
  }
}

// The reset-before GRU's second pass, after the gradient of r * h came through W_hn.
template <typename scalar_t>
void gru_reset_backward_pointwise(const BackwardState<scalar_t>& s, int64_t t, Rows rows, int64_t j_begin, int64_t j_end) {
  const Layer& layer = s.layer;
  const int64_t GH = layer.gate_rows();
  for (int64_t b = rows.begin; b < rows.end; ++b) {
    if (!s.active(t, b)) {
      continue;
    }
    scalar_t* grad_pre = s.grad_gates + s.offset(t, b, GH);
    const scalar_t* gates = s.workspace + s.offset(t, b, layer.width);
    const scalar_t* h_prev = s.previous_h(t, b);
    const scalar_t* grad_reset_h = s.grad_cell + b * s.ld_cell;
    scalar_t* grad_h = s.grad_h + b * s.ld_h;
#pragma omp simd
    for (int64_t j = j_begin; j < j_end; ++j) {
      const scalar_t r = gates[j];
      grad_pre[j] = grad_reset_h[j] * h_prev[j] * r * (scalar_t(1) - r);
      grad_h[j] += grad_reset_h[j] * r;
    }
  }
}

template <typename scalar_t, bool kRelu>
void rnn_backward_pointwise(const BackwardState<scalar_t>& s, int64_t t, Rows rows, int64_t j_begin, int64_t j_end) {
  const Layer& layer = s.layer;
  const int64_t H = layer.hidden;
  for (int64_t b = rows.begin; b < rows.end; ++b) {
    if (!s.active(t, b)) {
      s.no_gate_gradients(t, b, j_begin, j_end);
      continue;
    }
    scalar_t* grad_pre = s.grad_gates + s.offset(t, b, H);
    const scalar_t* h_new = s.workspace + s.offset(t, b, H);
    const scalar_t* grad_out = s.grad_output + s.offset(t, b, H);
    scalar_t* grad_h = s.grad_h + b * s.ld_h;
#pragma omp simd
    for (int64_t j = j_begin; j < j_end; ++j) {
      const scalar_t dh = grad_h[j] + grad_out[j];
      grad_pre[j] = kRelu ? (h_new[j] > scalar_t(0) ? dh : scalar_t(0)) : dh * (scalar_t(1) - h_new[j] * h_new[j]);
      grad_h[j] = scalar_t(0);
    }
  }
}

// grad_w_peep rows (i, f, o) or (f, o): sums over steps and batch of the gate's
// pre-activation gradient times the cell state it looked at (c_prev for i and f, c_new for o).
template <typename scalar_t>
void peephole_gradient(const BackwardState<scalar_t>& s, scalar_t* grad_peep) {
  const Layer& layer = s.layer;
  const int64_t H = layer.hidden, GH = layer.gate_rows();
  const bool coupled = layer.cell == Cell::LstmCoupled;
  const int64_t f_at = coupled ? 0 : H, o_at = coupled ? 2 * H : 3 * H;
  scalar_t* grad_i = grad_peep;
  scalar_t* grad_f = coupled ? grad_peep : grad_peep + H;
  scalar_t* grad_o = coupled ? grad_peep + H : grad_peep + 2 * H;
  at::parallel_for(0, H, kColumnBlock, [&](int64_t begin, int64_t end) {
    if (!coupled) {
      zero(grad_i + begin, end - begin);
    }
    zero(grad_f + begin, end - begin);
    zero(grad_o + begin, end - begin);
    for (int64_t t = 0; t < layer.steps; ++t) {
      for (int64_t b = 0; b < layer.batch; ++b) {
        if (!s.active(t, b)) {
          continue;
        }
        const scalar_t* grad_pre = s.grad_gates + s.offset(t, b, GH);
        const scalar_t* c_new = s.workspace + s.offset(t, b, layer.width) + GH;
        const scalar_t* c_prev = s.previous_c(t, b);
        if (!coupled) {
#pragma omp simd
          for (int64_t j = begin; j < end; ++j) {
            grad_i[j] += grad_pre[j] * c_prev[j];
          }
        }
#pragma omp simd
        for (int64_t j = begin; j < end; ++j) {
          grad_f[j] += grad_pre[f_at + j] * c_prev[j];
          grad_o[j] += grad_pre[o_at + j] * c_new[j];
        }
      }
    }
  });
}


template <typename scalar_t>
RecurrentGrads backward_kernel(const Layer& layer, const Tensor& grad_output, const Tensor& grad_h_n,
                               const OptionalTensor& grad_c_n, const Tensor& input, const Tensor& h0,
                               const OptionalTensor& c0, const Tensor& w_ih, const Tensor& w_hh,
                               const OptionalTensor& b_ih, const OptionalTensor& b_hh, const OptionalTensor& w_hr,
                               const OptionalTensor& w_peep, const std::vector<int64_t>& lengths, const Tensor& output,
                               const Tensor& workspace, bool need_input_grad, bool need_weight_grad) {
  const int64_t T = layer.steps, B = layer.batch, I = layer.input_size, H = layer.hidden;
  const int64_t GH = layer.gate_rows(), Hout = layer.out_size, W = layer.width;
  const int64_t lanes = gemm::Vector<scalar_t>::lanes;
  const auto options = input.options();
  const Tensor x = contiguous_large(input), h0_c = row_major(h0), w_ih_c = row_major(w_ih),
               w_hh_c = row_major(w_hh);
  const Tensor c0_c = c0 ? row_major(*c0) : Tensor();
  const Tensor w_peep_c = w_peep ? row_major(*w_peep) : Tensor();
  const Tensor grad_out_c = contiguous_large(grad_output), output_c = contiguous_large(output);
  const Tensor workspace_c = contiguous_large(workspace);

  // Rows of w_hh the state gradient flows back through in the step's main product; the
  // reset-before GRU's n block goes through r first.
  const int64_t step_rows = layer.cell == Cell::GruResetBefore ? 2 * H : GH;
  const int64_t step_work = B * Hout * GH + (layer.projection ? B * H * Hout : 0);
  // A single step (the cells) runs its main product once, without packing the weight.
  const bool single_step = T == 1;
  gemm::StepProduct<scalar_t> recurrent(w_hh_c.narrow(0, 0, step_rows), 1, !single_step);
  gemm::StepProduct<scalar_t> projection, reset_product;
  if (layer.projection) {
    projection = gemm::StepProduct<scalar_t>(*w_hr, 1);
  }
  if (layer.cell == Cell::GruResetBefore) {
    reset_product = gemm::StepProduct<scalar_t>(w_hh_c.narrow(0, 2 * H, H), 1);
  }
  Tensor grad_h = scratch<scalar_t>(B, recurrent.width(), options);
  {
    const Tensor seed = row_major(grad_h_n);
    for (int64_t b = 0; b < B; ++b) {
      std::copy_n(seed.data_ptr<scalar_t>() + b * Hout, Hout, grad_h.data_ptr<scalar_t>() + b * grad_h.stride(0));
    }
  }
  Tensor grad_c0 = layer.lstm() ? copy_of<scalar_t>(*grad_c_n, options) : at::empty({0}, options);
  Tensor grad_gates = empty_large({T, B, GH}, options);
  Tensor grad_x_n = empty_large({layer.cell == Cell::Gru ? T : 0, B, H}, options);
  Tensor grad_h_out = empty_large({layer.projection ? T : 0, B, Hout}, options);
  Tensor cell_out = empty_large({layer.projection ? T : 0, B, H}, options);
  const int64_t ld_grad_cell = std::max(projection.width(), reset_product.width());
  Tensor grad_cell = scratch<scalar_t>(B, ld_grad_cell, options);

  const BackwardState<scalar_t> s{layer,
                                  {h0_c.data_ptr<scalar_t>(), pointer_or_null<scalar_t>(c0_c),
                                   pointer_or_null<scalar_t>(w_peep_c), lengths.data()},
                                  grad_out_c.data_ptr<scalar_t>(),
                                  output_c.data_ptr<scalar_t>(),
                                  workspace_c.data_ptr<scalar_t>(),
                                  grad_h.data_ptr<scalar_t>(),
                                  layer.lstm() ? grad_c0.data_ptr<scalar_t>() : nullptr,
                                  grad_gates.data_ptr<scalar_t>(),
                                  grad_x_n.data_ptr<scalar_t>(),
                                  grad_h_out.data_ptr<scalar_t>(),
                                  cell_out.data_ptr<scalar_t>(),
                                  pointer_or_null<scalar_t>(grad_cell),
                                  grad_h.stride(0),
                                  ld_grad_cell,
                                  TimeOrder{T, layer.reverse}};

  const auto pack = [&](const Share& share) { pack_share(share, {&recurrent, &projection, &reset_product}); };
  // The projection's product and the reset-before GRU's n product read the first pass of
  // every share.
  const bool first_pass = layer.projection || layer.cell == Cell::GruResetBefore;
  const TeamPlan plan = plan_loop_team(single_step, B, H, step_work, {&recurrent, &projection, &reset_product});
  run_team(plan, T, first_pass ? 2 : 1, [&](Team& team) {
    team.each_share(pack);
    if (!team.packed()) {
      return;
    }
    for (int64_t index = T - 1; index >= 0; --index) {
      const int64_t t = s.order.time(index);
      if (first_pass) {
        team.each_share([&](const Share& share) {
          if (layer.projection) {
            on_share(share, B, Hout, lanes,
                     [&](Rows rows, int64_t j0, int64_t j1) { projection_backward_pointwise(s, t, rows, j0, j1); });
          } else {
            on_share(share, B, H, lanes,
                     [&](Rows rows, int64_t j0, int64_t j1) { gru_update_backward_pointwise(s, t, rows, j0, j1); });
          }
        });
        if (!team.sync()) {
          return;
        }
      }
      team.each_share([&](const Share& share) {
        const auto units = share.of(H, lanes);
        const Rows rows = share.rows(B);
        const int64_t M = rows.end - rows.begin;
        const auto pass = [&](const auto& pointwise) { on_share(share, B, H, lanes, pointwise); };
        switch (layer.cell) {
          case Cell::Lstm:
          case Cell::LstmCoupled:
            if (layer.projection) {
              projection.columns(s.grad_h_out + s.offset(t, rows.begin, Hout), Hout,
                                 s.grad_cell + rows.begin * s.ld_cell, s.ld_cell, M, units.first, units.second, false);
            }
            pass([&](Rows r, int64_t j0, int64_t j1) { lstm_backward_pointwise(s, t, r, j0, j1); });
            break;
          case Cell::Gru:
            pass([&](Rows r, int64_t j0, int64_t j1) { gru_backward_pointwise(s, t, r, j0, j1); });
            break;
          case Cell::GruResetBefore:
            reset_product.columns(s.grad_gates + s.offset(t, rows.begin, GH) + 2 * H, GH,
                                  s.grad_cell + rows.begin * s.ld_cell, s.ld_cell, M, units.first, units.second, false);
            pass([&](Rows r, int64_t j0, int64_t j1) { gru_reset_backward_pointwise(s, t, r, j0, j1); });
            break;
          case Cell::RnnTanh:
            pass([&](Rows r, int64_t j0, int64_t j1) { rnn_backward_pointwise<scalar_t, false>(s, t, r, j0, j1); });
            break;
          case Cell::RnnRelu:
            pass([&](Rows r, int64_t j0, int64_t j1) { rnn_backward_pointwise<scalar_t, true>(s, t, r, j0, j1); });
            break;
        }
      });
      if (!team.sync()) {
        return;
      }
      if (!single_step) {
        team.each_share([&](const Share& share) {
          const auto outs = share.of(Hout, lanes);
          const Rows rows = share.rows(B);
          recurrent.columns(s.grad_gates + s.offset(t, rows.begin, GH), GH, s.grad_h + rows.begin * s.ld_h, s.ld_h,
                            rows.end - rows.begin, outs.first, outs.second, true);
        });
      }
    }
  });
  if (single_step) {
    gemm::batch_rows_step_product<scalar_t>(grad_gates.view({B, GH}).narrow(1, 0, step_rows),
                                            w_hh_c.narrow(0, 0, step_rows).t(), grad_h.data_ptr<scalar_t>(),
                                            grad_h.stride(0), true, Hout, Hout);
  }

  // Each absent result is a tensor of its own: results must not alias one another.
  auto none = [&] { return at::empty({0}, options); };
  const Tensor grad_gates_flat = grad_gates.view({T * B, GH});
  const Tensor grad_x_n_flat = grad_x_n.view({-1, H});
  // The input side's gate gradients: the hidden side's, except the reset-after GRU's n block.
  const int64_t shared_rows = layer.cell == Cell::Gru ? 2 * H : GH;
  const auto product = [&](const Tensor& a, const Tensor& b, const Tensor& c, bool accumulate) {
    steps_product<scalar_t>(single_step, a, b, c, accumulate);
  };
  // The input gradient's products have the batch as rows, like a single step's main product.
  const auto batch_product = [&](const Tensor& a, const Tensor& b, const Tensor& c, bool accumulate) {
    if (single_step) {
      gemm::batch_rows_step_product<scalar_t>(a, b.t(), c.data_ptr<scalar_t>(), c.stride(0), accumulate, b.size(1),
                                              b.size(1));
    } else {
      product(a, b, c, accumulate);
    }
  };
  Tensor grad_input = none();
  if (need_input_grad) {
    grad_input = empty_large({T, B, I}, options);
    const Tensor dx = grad_input.view({T * B, I});
    batch_product(grad_gates_flat.narrow(1, 0, shared_rows), w_ih_c.narrow(0, 0, shared_rows), dx, false);
    // The reset-after GRU's n block, on the input side's own gradient.
    if (layer.cell == Cell::Gru) {
      batch_product(grad_x_n_flat, w_ih_c.narrow(0, 2 * H, H), dx, true);
    }
  }
  Tensor grad_w_ih = none(), grad_w_hh = none(), grad_b_ih = none(), grad_b_hh = none();
  Tensor grad_w_hr = none(), grad_w_peep = none();
  if (need_weight_grad) {
    const Tensor x_flat = x.view({T * B, I});
    // The weight gradients sum over all steps: the gate gradients, transposed, times the
    // inputs of the steps. Where seqkern's kernel runs both products (I and Hout whole
    // vectors), they read their rows of one transposed copy, made once, as they lie;
    // otherwise each product takes a transposed view as it is (packed_rows_product copies
    // it a chunk at a time, BLAS as it likes).
    const bool transposed_once = !single_step && rows_product_fits<scalar_t>(x_flat) &&
                                 rows_product_fits<scalar_t>(output_c.view({T * B, Hout})) &&
                                 GH * T * B * static_cast<int64_t>(sizeof(scalar_t)) <= kTransposedGatesBytes;
    Tensor gates_transposed;  // (GH, T B)
    if (transposed_once) {
      gates_transposed = empty_large({GH, T * B}, options);
      transpose(s.grad_gates, T * B, GH, gates_transposed.data_ptr<scalar_t>());
    }
    // (rows, steps B): the gradients of gate rows [first_row, first_row + rows) over steps
    // [first_step, first_step + steps), transposed.
    const auto gate_grads_t = [&](int64_t first_row, int64_t rows, int64_t first_step, int64_t steps) {
      return transposed_once ? gates_transposed.narrow(0, first_row, rows).narrow(1, first_step * B, steps * B)
                             : grad_gates.narrow(0, first_step, steps).view({steps * B, GH}).narrow(1, first_row, rows).t();
    };
    grad_w_ih = at::empty({GH, I}, options);
    product(gate_grads_t(0, shared_rows, 0, T), x_flat, grad_w_ih.narrow(0, 0, shared_rows), false);
    if (layer.cell == Cell::Gru) {
      product(grad_x_n_flat.t(), x_flat, grad_w_ih.narrow(0, 2 * H, H), false);
    }

    // grad_w_hh = sum over steps of grad_gates^T h_prev. h_prev is the previous step's
    // output (zero where that step was past a sequence's end), plus h0 at each
    // sequence's first step.
    // Every row is written by a product below (the reset-before GRU's n rows by the last
    // one), so no zero fill: at B = 1 each fill costs as much as a time step.
    grad_w_hh = at::empty({GH, Hout}, options);
    Tensor step_w_hh = grad_w_hh.narrow(0, 0, step_rows);
    if (T > 1) {
      const Tensor earlier = output_c.narrow(0, layer.reverse ? 1 : 0, T - 1).view({(T - 1) * B, Hout});
      product(gate_grads_t(0, step_rows, layer.reverse ? 0 : 1, T - 1), earlier, step_w_hh, false);
    }
    // At a single step these are the gate gradients as they are (an empty sequence's are zeros).
    Tensor first_grads = grad_gates_flat;
    if (T != 1) {
      first_grads = at::empty({B, GH}, options);
      for (int64_t b = 0; b < B; ++b) {
        scalar_t* first_row = first_grads.data_ptr<scalar_t>() + b * GH;
        if (lengths[b] > 0) {
          const int64_t t = layer.reverse ? lengths[b] - 1 : 0;
          std::copy_n(s.grad_gates + s.offset(t, b, GH), GH, first_row);
        } else {
          std::fill_n(first_row, GH, scalar_t(0));
        }
      }
    }
    product(first_grads.narrow(1, 0, step_rows).t(), h0_c, step_w_hh, T > 1);
    if (layer.cell == Cell::GruResetBefore) {
      product(gate_grads_t(2 * H, H, 0, T), workspace_c.view({T * B, W}).narrow(1, 3 * H, H),
              grad_w_hh.narrow(0, 2 * H, H), false);
    }

    if (b_ih || b_hh) {
      // Both biases sit beside the same pre-activations, so their gradients are the same
      // sums, summed once; only the reset-after GRU's b_in sees the input side's n block.
      Tensor sums = at::empty({GH}, options);
      column_sums(s.grad_gates, T * B, GH, GH, sums.data_ptr<scalar_t>());
      if (b_ih) {
        grad_b_ih = b_hh ? sums.clone() : sums;
        if (layer.cell == Cell::Gru) {
          column_sums(s.grad_x_n, T * B, H, H, grad_b_ih.data_ptr<scalar_t>() + 2 * H);
        }
      }
      if (b_hh) {
        grad_b_hh = sums;
      }
    }
    if (w_hr) {
      grad_w_hr = at::empty({Hout, H}, options);
      product(grad_h_out.view({T * B, Hout}).t(), cell_out.view({T * B, H}), grad_w_hr, false);
    }
    if (w_peep) {
      grad_w_peep = at::empty(w_peep->sizes(), options);
      peephole_gradient(s, grad_w_peep.data_ptr<scalar_t>());
    }
  }
  const Tensor grad_h0 = recurrent.width() == Hout ? grad_h : grad_h.narrow(1, 0, Hout).contiguous();
  return {grad_input, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, grad_w_hr, grad_w_peep};
}

OptionalTensor to_float(const OptionalTensor& tensor) {
  return tensor ? OptionalTensor(tensor->to(at::kFloat)) : std::nullopt;
}

// bfloat16 and float16 come in and go out as they are, with float32 math inside.
bool reduced_precision(const Tensor& input) {
  return input.scalar_type() == at::kBFloat16 || input.scalar_type() == at::kHalf;
}

}  // namespace

void check_recurrent_layer(const Tensor& input, const Tensor& h0, const OptionalTensor& c0, const Tensor& w_ih,
                           const Tensor& w_hh, const OptionalTensor& b_ih, const OptionalTensor& b_hh,
                           const OptionalTensor& w_hr, const OptionalTensor& w_peep, const OptionalTensor& lengths,
                           const std::string& cell) {
  const Layer layer = check_layer(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, lengths, cell,
                                  /*reverse=*/false, /*cpu_kernel=*/false);
  if (lengths && layer.batch > 0) {
    // With ATen ops, not the data pointer: under a transform lengths may be a wrapper.
    const Tensor outside = lengths->lt(0).logical_or(lengths->gt(layer.steps));
    if (outside.any().item<bool>()) {
      const int64_t b = outside.to(at::kByte).argmax().item<int64_t>();
      TORCH_CHECK_VALUE(false, "seqkern recurrent layer: lengths[", b, "] = ", (*lengths)[b].item<int64_t>(),
                        " is outside [0, ", layer.steps, "] (T = ", layer.steps, ")");
    }
  }
}

std::tuple<Tensor, Tensor, Tensor, Tensor> recurrent_layer_forward(
    const Tensor& input, const Tensor& h0, const OptionalTensor& c0, const Tensor& w_ih, const Tensor& w_hh,
    const OptionalTensor& b_ih, const OptionalTensor& b_hh, const OptionalTensor& w_hr, const OptionalTensor& w_peep,
    const OptionalTensor& lengths, const std::string& cell, bool reverse) {
  const Layer layer = check_layer(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, lengths, cell, reverse);
  const std::vector<int64_t> steps = sequence_lengths(layer, lengths);
  if (reduced_precision(input)) {
    auto [output, h_n, c_n, workspace] =
        forward_kernel<float>(layer, input.to(at::kFloat), h0.to(at::kFloat), to_float(c0), w_ih.to(at::kFloat),
                              w_hh.to(at::kFloat), to_float(b_ih), to_float(b_hh), to_float(w_hr), to_float(w_peep),
                              steps);
    const auto dtype = input.scalar_type();
    return {output.to(dtype), h_n.to(dtype), c_n.to(dtype), workspace.to(dtype)};
  }
  return AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "recurrent_layer_forward", [&] {
    return forward_kernel<scalar_t>(layer, input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, steps);
  });
}

RecurrentGrads recurrent_layer_backward(const Tensor& grad_output, const Tensor& grad_h_n,
                                        const OptionalTensor& grad_c_n, const Tensor& input, const Tensor& h0,
                                        const OptionalTensor& c0, const Tensor& w_ih, const Tensor& w_hh,
                                        const OptionalTensor& b_ih, const OptionalTensor& b_hh,
                                        const OptionalTensor& w_hr, const OptionalTensor& w_peep,
                                        const OptionalTensor& lengths, const Tensor& output, const Tensor& workspace,
                                        const std::string& cell, bool reverse, bool need_input_grad,
                                        bool need_weight_grad) {
  const Layer layer = check_layer(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, lengths, cell, reverse);
  const int64_t T = layer.steps, B = layer.batch;
  check_shape("grad_output", grad_output, {T, B, layer.out_size});
  check_shape("grad_h_n", grad_h_n, {B, layer.out_size});
  if (layer.lstm()) {
    TORCH_CHECK_VALUE(grad_c_n.has_value(), "seqkern recurrent layer: cell '", cell, "' needs grad_c_n of shape (", B,
                      ", ", layer.hidden, ")");
    check_shape("grad_c_n", *grad_c_n, {B, layer.hidden});
    check_like_input("grad_c_n", *grad_c_n, input);
  } else {
    TORCH_CHECK_VALUE(!grad_c_n.has_value(), "seqkern recurrent layer: cell '", cell,
                      "' has no cell state, but grad_c_n was given");
  }
  check_shape("output", output, {T, B, layer.out_size});
  check_shape("workspace", workspace, {T, B, layer.width});
  check_like_input("grad_output", grad_output, input);
  check_like_input("grad_h_n", grad_h_n, input);
  check_like_input("output", output, input);
  check_like_input("workspace", workspace, input);
  const std::vector<int64_t> steps = sequence_lengths(layer, lengths);
  if (reduced_precision(input)) {
    // The forward is run again in float32: its reduced-precision output and workspace have
    // lost the precision that the gradients of a long sum need.
    const Tensor input_f = input.to(at::kFloat), h0_f = h0.to(at::kFloat), w_ih_f = w_ih.to(at::kFloat);
    const Tensor w_hh_f = w_hh.to(at::kFloat);
    const OptionalTensor c0_f = to_float(c0), b_ih_f = to_float(b_ih), b_hh_f = to_float(b_hh);
    const OptionalTensor w_hr_f = to_float(w_hr), w_peep_f = to_float(w_peep);
    const auto forward = forward_kernel<float>(layer, input_f, h0_f, c0_f, w_ih_f, w_hh_f, b_ih_f, b_hh_f, w_hr_f,
                                               w_peep_f, steps);
    auto grads = backward_kernel<float>(layer, grad_output.to(at::kFloat), grad_h_n.to(at::kFloat),
                                        to_float(grad_c_n), input_f, h0_f, c0_f, w_ih_f, w_hh_f, b_ih_f, b_hh_f,
                                        w_hr_f, w_peep_f, steps, std::get<0>(forward), std::get<3>(forward),
                                        need_input_grad, need_weight_grad);
    const auto dtype = input.scalar_type();
    return std::apply([dtype](const auto&... grad) { return RecurrentGrads{grad.to(dtype)...}; }, grads);
  }
  return AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "recurrent_layer_backward", [&] {
    return backward_kernel<scalar_t>(layer, grad_output, grad_h_n, grad_c_n, input, h0, c0, w_ih, w_hh, b_ih, b_hh,
                                     w_hr, w_peep, steps, output, workspace, need_input_grad, need_weight_grad);
  });
}

void register_recurrent(pybind11::module_& module) {
  namespace py = pybind11;
  module.def("recurrent_layer_forward", &recurrent_layer_forward, py::call_guard<py::gil_scoped_release>(),
             "One recurrent layer, one direction, whole sequence -> (output, h_n, c_n, workspace); "
             "see seqkern/ops/recurrent.py",
             py::arg("input"), py::arg("h0"), py::arg("c0"), py::arg("w_ih"), py::arg("w_hh"), py::arg("b_ih"),
             py::arg("b_hh"), py::arg("w_hr"), py::arg("w_peep"), py::arg("lengths"), py::arg("cell"),
             py::arg("reverse"));
  module.def("recurrent_layer_backward", &recurrent_layer_backward, py::call_guard<py::gil_scoped_release>(),
             "Backpropagation through time of recurrent_layer_forward -> (grad_input, grad_h0, grad_c0, "
             "grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, grad_w_hr, grad_w_peep)",
             py::arg("grad_output"), py::arg("grad_h_n"), py::arg("grad_c_n"), py::arg("input"), py::arg("h0"),
             py::arg("c0"), py::arg("w_ih"), py::arg("w_hh"), py::arg("b_ih"), py::arg("b_hh"), py::arg("w_hr"),
             py::arg("w_peep"), py::arg("lengths"), py::arg("output"), py::arg("workspace"), py::arg("cell"),
             py::arg("reverse"), py::arg("need_input_grad"), py::arg("need_weight_grad"));
  module.def(
      "_set_team_patience",
      [](int64_t microseconds) {
        TORCH_CHECK_VALUE(microseconds >= 0, "_set_team_patience: microseconds must be >= 0, got ", microseconds);
        return team_patience_ns.exchange(microseconds * 1000) / 1000;
      },
      "For tests: how long (us) a team's thread waits at barriers (plus a share of the loop's time) before the "
      "team breaks up and one thread goes on alone; 0 breaks every team up at its first barrier. Returns the "
      "previous value.",
      py::arg("microseconds"));
  module.def(
      "_set_team_split",
      [](const std::string& split) {
        const char* names[] = {"auto", "columns", "rows"};  // in SplitChoice's order
        const auto named = std::find(std::begin(names), std::end(names), split);
        TORCH_CHECK_VALUE(named != std::end(names), "_set_team_split: split must be 'auto', 'columns' or 'rows', got '",
                          split, "'");
        const auto before = split_choice.exchange(static_cast<SplitChoice>(named - std::begin(names)));
        return std::string(names[static_cast<int>(before)]);
      },
      "For tests: how a time loop's team shares its steps where either would do: 'columns' (hidden units, a "
      "barrier per step), 'rows' (sequences, no barrier) or 'auto' (rows where the weight fits a core's cache). "
      "Returns the previous choice.",
      py::arg("split"));
  module.def(
      "_team_breakups", [] { return team_breakups.load(); },
      "For tests: how many time loops have gone on with one thread after their team broke up.");
  module.def(
      "_team_patience_for",
      [](int size, int64_t elapsed_us, int64_t phases_done, int64_t phases_left, int64_t waited_us) {
        return Barrier::patience_ns(size, elapsed_us * 1000, phases_done, phases_left, waited_us * 1000) / 1000;
      },
      "For tests: how long (us) a thread of a team of `size` may wait at a barrier, `elapsed_us` into its loop, "
      "with `phases_done` phases behind and `phases_left` ahead, having waited `waited_us` so far.",
      py::arg("size"), py::arg("elapsed_us"), py::arg("phases_done"), py::arg("phases_left"), py::arg("waited_us"));
}

}  // namespace seqkern
