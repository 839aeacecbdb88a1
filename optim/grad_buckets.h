// GradBuckets: the data-parallel gradient reduction behind DistributedOptimizer (DESIGN.md
// "Training step"). Parameters are grouped into buckets in reverse registration order until the first
// step's backward shows the order it produces their gradients in; from the second step on the buckets
// follow that order (rank 0's, broadcast), as PyTorch DDP's Reducer rebuilds its buckets. Each bucket is one fp32
// buffer packed rank-major over the `parts` of the ZeRO-1 row partition:
//
//   buffer [parts * chunk]:
//     | part 0: rows of p0 | rows of p1 | pad | part 1: rows of p0 | rows of p1 | pad | ...
//
// so one ReduceScatter (SUM over DP) leaves each rank the summed gradient of its own rows in
// `shard` [chunk]; with parts == 1 (ZeRO off) the buffer is AllReduced and `shard` is the buffer.
// After the update the same layout carries the updated rows back with one AllGather per bucket.
//
// With overlap, a post-hook on each parameter's AccumulateGrad node copies its gradient into the
// bucket during the last micro-step's backward, and the bucket's async collective is launched as
// soon as every parameter in it is ready. Buckets are always launched in bucket order, so every
// rank issues the same collectives in the same order whichever gradients arrive first (as PyTorch
// DDP's Reducer does). MPI moves a nonblocking collective only inside MPI calls, and at TP = 1 the
// backward makes none: with `poll`, a progress thread tests the oldest bucket still in flight every
// 200 us (sleeping in between, so it takes no core) and every hook tests it too, so the reductions
// advance (and usually finish) while backward runs instead of all at once in Finish().
//
//   GradBuckets sync(slots, dp, /*parts=*/dp->size(), 25 << 20);
//   sync.Arm(/*overlap=*/true);
//   loss.backward();
//   sync.Finish();  // ReducedRows(i): this rank's rows of the summed gradient of parameter i
#pragma once

#include <torch/csrc/autograd/function.h>
#include <torch/torch.h>

#include <cstdint>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <string>
#include <vector>

#include "cluster/communicator.h"
#include "cluster/trace.h"

namespace lcl::optim::internal {

// One parameter's place in the row partition and in its bucket.
struct ParamSlot {
  std::string name;
  torch::Tensor param;    // the local (TP) tensor, [rows, ...]
  int64_t rows = 0;       // local dim 0
  int64_t row_numel = 0;  // elements per row
  // ceil(rows / parts): part k holds rows [k * rows_per_part, (k + 1) * rows_per_part) ∩ [0, rows).
  int64_t rows_per_part = 0;
  int64_t part_row_lo = 0;  // this rank's rows: [part_row_lo, part_row_lo + part_rows)
  int64_t part_rows = 0;
  int bucket = -1;
  int64_t offset = 0;  // where this parameter's rows start inside each part's chunk of its bucket
};

// Rows [lo, lo + n) of a parameter with `rows` rows that part `k` of `parts` holds (ceil split; n
// may be 0).
void PartRows(int64_t rows, int parts, int k, int64_t* lo, int64_t* n);

struct Bucket {
  std::vector<int> slots;  // indices into the slot list, in packing order
  int64_t chunk = 0;       // elements per part (padding of short parts kept zero)
  // [parts * chunk] fp32: the packed gradients; for fp32 params later the gathered parameters.
  torch::Tensor buffer;
  // [chunk] fp32: this rank's reduced rows (the buffer itself when parts == 1).
  torch::Tensor shard;
  // [chunk] param dtype: the updated rows to all-gather (the shard for fp32 params).
  torch::Tensor send;
  // [parts * chunk] param dtype: every part's updated rows (the buffer for fp32 params).
  torch::Tensor gathered;
  cluster::WorkPtr work;
  int pending = 0;  // parameters not yet ready in the armed backward
  bool launched = false;
  bool launched_in_backward = false;
  bool completed = false;  // its collective was seen complete (by a hook's poll or Finish)
};

class GradBuckets {
 public:
  // `slots` must have rows/row_numel filled in; partition and bucket fields are filled here.
  // `parts` is 1 (ZeRO off: AllReduce) or dp->size() (ZeRO-1: ReduceScatter); this rank's part is
  // dp->rank().
  // `poll`: the hooks test the in-flight buckets (see above). `tracer` may be null.
  GradBuckets(std::vector<ParamSlot> slots, cluster::Communicator* dp, int parts, int64_t bucket_bytes,
              bool poll = true, cluster::Tracer* tracer = nullptr);
  ~GradBuckets();
  GradBuckets(const GradBuckets&) = delete;
  GradBuckets& operator=(const GradBuckets&) = delete;

  // Before the backward whose gradients are final: with `overlap`, the hooks pack and launch
  // buckets as the gradients arrive; without, everything is packed and launched in Finish().
  void Arm(bool overlap);
  // Launches (in bucket order) every bucket the backward did not, packing parameters whose hook
  // never fired (unused in the last backward: their accumulated gradient, or zeros), then waits for
  // all reductions. Returns the milliseconds spent. Throws ConfigError if a hook fired twice for
  // one parameter.
  double Finish();
  // After Finish(): the reduced gradient of this rank's rows of slot `i`, [part_rows, ...] fp32 (a
  // view into the bucket's shard; may be scaled in place).
  torch::Tensor ReducedRows(int i) const;
  // After the update: copies each slot's updated rows (`rows(i)`: [part_rows, ...], any float
  // dtype) into the buckets and all-gathers them into every rank's parameters (parts > 1 only).
  void GatherParams(const std::function<torch::Tensor(int)>& rows);

  const std::vector<ParamSlot>& slots() const { return slots_; }
  const std::vector<Bucket>& buckets() const { return buckets_; }
  int parts() const { return parts_; }
  int part() const { return part_; }
  // Buckets the hooks launched during the last armed backward (for stats and tests).
  int launched_in_backward() const { return launched_in_backward_; }
  // Buckets whose reduction a hook saw complete before backward ended (the rest were waited for in Finish()).
  int completed_in_backward() const { return completed_in_backward_; }
  // Buckets launched in the last armed backward while some gradient was still to come (the overlap's room).
  int launched_early() const { return launched_early_; }
  // Tests of in-flight buckets the hooks made in the last armed backward.
  int64_t polls() const { return polls_; }

  // Called from the AccumulateGrad post-hook of slot `i` (autograd's thread).
  void MarkReady(int i);

 private:
  void Pack(int i);
  void Launch(Bucket& b);
  // Tests the oldest launched bucket not yet seen complete (one test moves every pending MPI operation). With mu_
  // held.
  void Poll();
  // Lays the buckets out over the slots in `order` (bucket_bytes_ each), with fresh buffers.
  void Layout(const std::vector<int>& order);
  // The layout in the order the first recorded backward produced the gradients (rank 0's, broadcast over DP).
  // Collective over DP.
  void RebuildFromReadyOrder();
  // The progress thread: Poll() every 200 us while buckets are in flight in an armed backward.
  void ProgressLoop();

  std::vector<ParamSlot> slots_;
  std::vector<Bucket> buckets_;
  cluster::Communicator* dp_;
  int parts_;
  int part_;
  // Hook state: armed during the last micro-step's backward with overlap.
  std::mutex mu_;
  bool armed_ = false;
  bool prepared_ = false;    // Arm() ran since the last Finish()
  std::vector<char> ready_;  // per slot
  std::string duplicate_;    // a parameter whose hook fired twice in one armed backward
  size_t next_launch_ = 0;   // buckets [0, next_launch_) are launched
  int launched_in_backward_ = 0;
  int completed_in_backward_ = 0;
  int launched_early_ = 0;
  size_t next_poll_ = 0;  // buckets [0, next_poll_) were seen complete
  int64_t polls_ = 0;
  bool poll_;
  cluster::Tracer* tracer_;
  int64_t bucket_bytes_ = 0;
  // The first last-micro-step backward records the order its gradients arrive in; the next Arm() rebuilds.
  bool recording_ = false;
  bool order_recorded_ = false;
  bool relayout_pending_ = false;
  std::vector<int> seen_order_;
  std::condition_variable progress_cv_;
  bool stop_ = false;
  std::thread progress_;  // with poll_ and more than one DP rank
  // The AccumulateGrad nodes (kept alive: a variable holds only a weak reference) and the hook keys
  // to remove.
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators_;
  std::vector<uintptr_t> hook_keys_;
};

}  // namespace lcl::optim::internal
