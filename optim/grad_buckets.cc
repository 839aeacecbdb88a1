// GradBuckets: bucket layout, the AccumulateGrad post-hooks, in-order launching of the reductions,
// and the all-gather of updated rows.
#include "optim/grad_buckets.h"

#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>
#include <chrono>

#include "cluster/errors.h"
#include "cluster/log.h"

namespace lcl::optim::internal {
namespace {

// Marks its parameter ready once AccumulateGrad has added this backward's gradient into param.grad
// (post-hooks run after the node's apply). The same signature in LibTorch 1.13 and 2.x.
class ReadyHook final : public torch::autograd::FunctionPostHook {
 public:
  ReadyHook(GradBuckets* owner, int slot) : owner_(owner), slot_(slot) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& /*inputs*/) override {
    owner_->MarkReady(slot_);
    return outputs;
  }

 private:
  GradBuckets* owner_;
  int slot_;
};

// `param`'s shape with dim 0 replaced by `rows`.
std::vector<int64_t> RowsShape(const torch::Tensor& param, int64_t rows) {
  std::vector<int64_t> shape = param.sizes().vec();
  shape[0] = rows;
  return shape;
}

}  // namespace

void PartRows(int64_t rows, int parts, int k, int64_t* lo, int64_t* n) {
  const int64_t per = (rows + parts - 1) / parts;
  *lo = std::min(rows, per * k);
  *n = std::min(rows, *lo + per) - *lo;
}

GradBuckets::GradBuckets(std::vector<ParamSlot> slots, cluster::Communicator* dp, int parts, int64_t bucket_bytes,
                         bool poll, cluster::Tracer* tracer)
    : slots_(std::move(slots)),
      dp_(dp),
      parts_(parts),
      part_(parts > 1 ? dp->rank() : 0),
      poll_(poll),
      tracer_(tracer) {
  CHECK(parts == 1 || parts == dp->size()) << "parts must be 1 or the DP size";
  bucket_bytes_ = bucket_bytes;
  for (ParamSlot& s : slots_) {
    s.rows_per_part = (s.rows + parts_ - 1) / parts_;
    PartRows(s.rows, parts_, part_, &s.part_row_lo, &s.part_rows);
  }
  // Until a backward shows the real order: reverse registration order (the last layers' gradients come first).
  std::vector<int> order;
  for (int i = static_cast<int>(slots_.size()) - 1; i >= 0; --i) order.push_back(i);
  Layout(order);
  ready_.assign(slots_.size(), 0);
  for (size_t i = 0; i < slots_.size(); ++i) {
    std::shared_ptr<torch::autograd::Node> acc = torch::autograd::impl::grad_accumulator(slots_[i].param);
    if (!acc) {
      throw ConfigError("optimizer: parameter '" + slots_[i].name +
                        "' is not a leaf tensor that requires grad, so its gradient cannot be synchronised; pass "
                        "the module's parameters themselves");
    }
    hook_keys_.push_back(acc->add_post_hook(std::make_unique<ReadyHook>(this, static_cast<int>(i))));
    accumulators_.push_back(std::move(acc));
  }
  VLOG(1) << "grad buckets: " << buckets_.size() << " for " << slots_.size() << " parameters, " << parts_ << " part(s)";
  if (poll_ && dp_->size() > 1) progress_ = std::thread([this] { ProgressLoop(); });
}

void GradBuckets::Layout(const std::vector<int>& order) {
  buckets_.clear();
  int64_t bytes = 0;
  for (const int i : order) {
    ParamSlot& s = slots_[i];
    if (buckets_.empty() || bytes >= bucket_bytes_) {
      buckets_.emplace_back();
      bytes = 0;
    }
    Bucket& b = buckets_.back();
    s.bucket = static_cast<int>(buckets_.size()) - 1;
    s.offset = b.chunk;
    b.slots.push_back(i);
    b.chunk += s.rows_per_part * s.row_numel;
    bytes += s.param.numel() * static_cast<int64_t>(sizeof(float));
  }
  for (Bucket& b : buckets_) {
    const torch::Tensor& p = slots_[b.slots.front()].param;
    const auto f32 = p.options().dtype(torch::kFloat32).requires_grad(false);
    b.buffer = torch::zeros({parts_ * b.chunk}, f32);
    b.shard = parts_ > 1 ? torch::zeros({b.chunk}, f32) : b.buffer;
    if (parts_ > 1) {
      const bool fp32 = p.scalar_type() == torch::kFloat32;
      b.send = fp32 ? b.shard : torch::zeros({b.chunk}, p.options().requires_grad(false));
      b.gathered = fp32 ? b.buffer : torch::zeros({parts_ * b.chunk}, p.options().requires_grad(false));
    }
  }
}

void GradBuckets::RebuildFromReadyOrder() {
  relayout_pending_ = false;
  // Rank 0's order, so that every rank packs the same buckets (in practice every rank's backward is the same graph).
  std::vector<int64_t> mine(slots_.size(), -1);
  for (size_t k = 0; k < seen_order_.size(); ++k) mine[k] = seen_order_[k];
  torch::Tensor order_t = torch::tensor(mine, torch::kLong).to(slots_.front().param.device());
  dp_->Broadcast(order_t, 0);
  order_t = order_t.cpu();
  std::vector<int> order;
  std::vector<char> placed(slots_.size(), 0);
  for (int64_t k = 0; k < order_t.numel(); ++k) {
    const int64_t i = order_t[k].item<int64_t>();
    if (i < 0 || i >= int64_t(slots_.size()) || placed[size_t(i)]) continue;
    placed[size_t(i)] = 1;
    order.push_back(static_cast<int>(i));
  }
  // Parameters no backward reached go last, in reverse registration order.
  for (int i = static_cast<int>(slots_.size()) - 1; i >= 0; --i) {
    if (!placed[size_t(i)]) order.push_back(i);
  }
  const size_t before = buckets_.size();
  Layout(order);
  VLOG(1) << "grad buckets: rebuilt in the order the first backward produced the gradients: " << before << " -> "
          << buckets_.size() << " bucket(s)";
}

void GradBuckets::ProgressLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    progress_cv_.wait(lock, [this] { return stop_ || (armed_ && next_poll_ < next_launch_); });
    if (stop_) break;
    Poll();
    lock.unlock();
    std::this_thread::sleep_for(std::chrono::microseconds(200));
    lock.lock();
  }
}

GradBuckets::~GradBuckets() {
  if (progress_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    progress_cv_.notify_all();
    progress_.join();
  }
  // Wait for anything still in flight (its buffers are ours), then unhook so autograd never calls a
  // dead owner.
  for (Bucket& b : buckets_) {
    if (!b.work) continue;
    try {
      b.work->Wait();
    } catch (const std::exception& e) {
      LOG(WARNING) << "grad buckets: a collective failed while shutting down: " << e.what();
    }
  }
  for (size_t i = 0; i < accumulators_.size(); ++i) accumulators_[i]->del_post_hook(hook_keys_[i]);
}

void GradBuckets::Arm(bool overlap) {
  std::lock_guard<std::mutex> lock(mu_);
  // After the first step: the buckets follow the order backward produced the gradients in (as PyTorch DDP's
  // Reducer rebuilds them), so each bucket is complete, and launched, as early as its gradients allow. The
  // registration order can be far from it: a multimodal model registers the projector after the decoder, but its
  // gradient comes last, and an early bucket holding it would hold back every launch until backward ends.
  if (relayout_pending_) RebuildFromReadyOrder();
  recording_ = !order_recorded_;
  std::fill(ready_.begin(), ready_.end(), 0);
  for (Bucket& b : buckets_) {
    b.pending = static_cast<int>(b.slots.size());
    b.launched = false;
    b.launched_in_backward = false;
    b.completed = false;
    b.work.reset();
  }
  next_launch_ = 0;
  next_poll_ = 0;
  launched_in_backward_ = 0;
  completed_in_backward_ = 0;
  launched_early_ = 0;
  polls_ = 0;
  duplicate_.clear();
  armed_ = overlap;
  prepared_ = true;
}

void GradBuckets::MarkReady(int i) {
  std::lock_guard<std::mutex> lock(mu_);
  if (recording_ && std::find(seen_order_.begin(), seen_order_.end(), i) == seen_order_.end()) {
    seen_order_.push_back(i);
  }
  if (!armed_) return;  // an earlier micro-step: gradients keep accumulating in param.grad
  if (ready_[i]) {
    duplicate_ = slots_[i].name;
    return;
  }
  ready_[i] = 1;
  Pack(i);
  if (poll_) Poll();
  Bucket& b = buckets_[slots_[i].bucket];
  if (--b.pending > 0) return;
  // Launch every bucket that is complete, in bucket order only: a later bucket that finished first
  // waits for the earlier ones, so all ranks issue the same sequence of collectives.
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].pending == 0) {
    Bucket& next = buckets_[next_launch_++];
    Launch(next);
    next.launched_in_backward = true;
    ++launched_in_backward_;
    if (std::count(ready_.begin(), ready_.end(), 0) > 0) ++launched_early_;  // gradients still to come
  }
  progress_cv_.notify_one();
}

void GradBuckets::Poll() {
  while (next_poll_ < next_launch_) {
    Bucket& b = buckets_[next_poll_];
    if (b.work) {
      ++polls_;
      if (!b.work->IsCompleted()) return;
    }
    b.completed = true;
    ++completed_in_backward_;
    ++next_poll_;
  }
}

void GradBuckets::Pack(int i) {
  const ParamSlot& s = slots_[i];
  Bucket& b = buckets_[s.bucket];
  torch::NoGradGuard no_grad;
  const torch::Tensor g = s.param.grad();  // undefined when the parameter took part in no backward
  for (int k = 0; k < parts_; ++k) {
    int64_t lo = 0, n = 0;
    PartRows(s.rows, parts_, k, &lo, &n);
    torch::Tensor dst = b.buffer.narrow(0, k * b.chunk + s.offset, s.rows_per_part * s.row_numel);
    if (n > 0) {
      torch::Tensor rows = dst.narrow(0, 0, n * s.row_numel);
      if (g.defined()) {
        rows.copy_(g.narrow(0, lo, n).reshape({-1}));
      } else {
        rows.zero_();
      }
    }
    // The padding of a short part stays zero so the reduced padding is zero too.
    if (n < s.rows_per_part) dst.narrow(0, n * s.row_numel, (s.rows_per_part - n) * s.row_numel).zero_();
  }
}

void GradBuckets::Launch(Bucket& b) {
  if (parts_ > 1) {
    b.work = dp_->ReduceScatterAsync(b.buffer, b.shard, cluster::ReduceOp::kSum);
  } else if (dp_->size() > 1) {
    b.work = dp_->AllReduceAsync(b.buffer, cluster::ReduceOp::kSum);
  }
  b.launched = true;
  if (tracer_ && tracer_->enabled()) {
    tracer_->Instant("launch bucket " + std::to_string(&b - buckets_.data()), "comm",
                     {{"bytes", double(b.buffer.numel()) * 4}, {"parameters", double(b.slots.size())}});
  }
}

double GradBuckets::Finish() {
  if (!prepared_) Arm(/*overlap=*/false);
  const auto t0 = std::chrono::steady_clock::now();
  std::string duplicate;
  {
    std::lock_guard<std::mutex> lock(mu_);
    armed_ = false;
    if (recording_) {
      recording_ = false;
      order_recorded_ = true;
      relayout_pending_ = true;  // at the next Arm(): the reduced rows of this step are still to be read
    }
    // What the backward did not launch: parameters it never reached keep their accumulated gradient
    // (or zero).
    for (; next_launch_ < buckets_.size(); ++next_launch_) {
      Bucket& b = buckets_[next_launch_];
      for (int i : b.slots) {
        if (ready_[i]) continue;
        ready_[i] = 1;
        Pack(i);
      }
      b.pending = 0;
      Launch(b);
    }
    duplicate = duplicate_;
    prepared_ = false;
  }
  for (Bucket& b : buckets_) {
    if (b.work) b.work->Wait();
    b.work.reset();
    b.completed = true;
  }
  if (tracer_) {
    tracer_->Instant("grad buckets done", "comm",
                     {{"buckets", double(buckets_.size())},
                      {"launched_in_backward", double(launched_in_backward_)},
                      {"completed_in_backward", double(completed_in_backward_)},
                      {"polls", double(polls_)}});
  }
  if (!duplicate.empty()) {
    throw ConfigError("optimizer: the gradient of '" + duplicate +
                      "' was accumulated twice after PrepareBackward(true); call PrepareBackward before every "
                      "micro-step's backward, and run one backward per micro-step");
  }
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

torch::Tensor GradBuckets::ReducedRows(int i) const {
  const ParamSlot& s = slots_[i];
  const Bucket& b = buckets_[s.bucket];
  return b.shard.narrow(0, s.offset, s.part_rows * s.row_numel).view(RowsShape(s.param, s.part_rows));
}

void GradBuckets::GatherParams(const std::function<torch::Tensor(int)>& rows) {
  if (parts_ == 1) return;
  torch::NoGradGuard no_grad;
  for (Bucket& b : buckets_) {
    for (int i : b.slots) {
      const ParamSlot& s = slots_[i];
      if (s.part_rows == 0) continue;
      b.send.narrow(0, s.offset, s.part_rows * s.row_numel).copy_(rows(i).reshape({-1}));
    }
    // Async: packing the next bucket overlaps this one's collective.
    b.work = dp_->AllGatherAsync(b.send, b.gathered);
  }
  for (Bucket& b : buckets_) {
    b.work->Wait();
    b.work.reset();
    for (int i : b.slots) {
      const ParamSlot& s = slots_[i];
      torch::Tensor param = s.param.detach();
      for (int k = 0; k < parts_; ++k) {
        int64_t lo = 0, n = 0;
        PartRows(s.rows, parts_, k, &lo, &n);
        if (n == 0) continue;
        param.narrow(0, lo, n).copy_(
            b.gathered.narrow(0, k * b.chunk + s.offset, n * s.row_numel).view(RowsShape(s.param, n)));
      }
    }
  }
}

}  // namespace lcl::optim::internal
