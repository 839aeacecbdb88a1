// MpiCommunicator: collectives on CPU tensors with blocking and nonblocking MPI.
#include "cluster/mpi_communicator.h"

#include <climits>
#include <cstdio>
#include <functional>
#include <sstream>
#include <thread>
#include <vector>

#include "cluster/check.h"
#include "cluster/errors.h"
#include "cluster/log.h"

namespace lcl::cluster {

const char* ReduceOpName(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kAvg:
      return "avg";
    case ReduceOp::kMax:
      return "max";
    case ReduceOp::kMin:
      return "min";
  }
  return "?";
}

namespace {

// MPI datatype for a dtype MPI can reduce natively; MPI_DATATYPE_NULL for bf16/fp16 (staged through fp32).
MPI_Datatype NativeType(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat:
      return MPI_FLOAT;
    case torch::kDouble:
      return MPI_DOUBLE;
    case torch::kInt:
      return MPI_INT32_T;
    case torch::kLong:
      return MPI_INT64_T;
    default:
      return MPI_DATATYPE_NULL;
  }
}

bool IsStaged16(torch::ScalarType t) { return t == torch::kBFloat16 || t == torch::kHalf; }

MPI_Op MpiOp(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg:
      return MPI_SUM;  // avg = sum, then divided by the group size on completion
    case ReduceOp::kMax:
      return MPI_MAX;
    case ReduceOp::kMin:
      return MPI_MIN;
  }
  return MPI_SUM;
}

int CheckedCount(int64_t n, const char* op, const std::string& comm) {
  if (n > INT_MAX) {
    std::ostringstream msg;
    msg << op << " on '" << comm << "': " << n << " elements exceed what one MPI call carries (" << INT_MAX
        << "); split the tensor into chunks.";
    throw CommError(msg.str());
  }
  return static_cast<int>(n);
}

class MpiWork final : public Work {
 public:
  // `trace_id` != 0: the launch is on `tracer`'s timeline as `trace_name`; completion ends it.
  MpiWork(MPI_Request req, std::function<void()> finish, Watchdog* dog, uint64_t token, WaitMode wait, Tracer* tracer,
          std::string trace_name, uint64_t trace_id, int64_t bytes)
      : req_(req),
        finish_(std::move(finish)),
        dog_(dog),
        token_(token),
        wait_(wait),
        tracer_(tracer),
        trace_name_(std::move(trace_name)),
        trace_id_(trace_id),
        bytes_(bytes) {}
  ~MpiWork() override {
    if (done_) return;
    // The buffers must outlive the operation: wait here rather than let MPI write into freed memory.
    LOG(WARNING) << "an async collective was dropped before Wait(); waiting for it in the destructor";
    MPI_Wait(&req_, MPI_STATUS_IGNORE);
    if (dog_) dog_->End(token_);
  }

  bool IsCompleted() override {
    if (done_) return true;
    int flag = 0;
    Check(MPI_Test(&req_, &flag, MPI_STATUS_IGNORE), "MPI_Test");
    if (flag) Complete();
    return done_;
  }
  void Wait() override {
    if (done_) return;
    Check(WaitForRequest(&req_, wait_, bytes_), wait_ == WaitMode::kSpin ? "MPI_Wait" : "MPI_Test");
    Complete();
  }
  bool Wait(std::chrono::milliseconds timeout) override {
    const auto start = std::chrono::steady_clock::now();
    while (!IsCompleted()) {
      const auto waited = std::chrono::steady_clock::now() - start;
      if (waited >= timeout) return false;
      // As WaitForRequest: spin briefly, then leave the core between tests.
      if (waited > std::chrono::milliseconds(1)) {
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      } else {
        std::this_thread::yield();
      }
    }
    return true;
  }

 private:
  void Check(int rc, const char* call) {
    if (rc == MPI_SUCCESS) return;
    done_ = true;  // the request is gone; nothing left to wait for in the destructor
    if (dog_) dog_->End(token_);
    internal::ThrowMpiError(rc, call, __FILE__, __LINE__);
  }
  void Complete() {
    done_ = true;
    if (dog_) dog_->End(token_);
    if (finish_) finish_();
    if (trace_id_ != 0) tracer_->AsyncEnd(trace_name_, "comm", trace_id_);
  }

  MPI_Request req_;
  std::function<void()> finish_;
  Watchdog* dog_;
  uint64_t token_;
  WaitMode wait_;
  Tracer* tracer_;
  std::string trace_name_;
  uint64_t trace_id_;
  int64_t bytes_;
  bool done_ = false;
};

// "dp ReduceScatter 25.0 MB": a collective's name on the timeline.
std::string TraceName(const std::string& comm, const char* op, int64_t bytes) {
  char size[32];
  std::snprintf(size, sizeof(size), " %.1f %s", bytes >= (1 << 20) ? bytes / 1048576.0 : bytes / 1024.0,
                bytes >= (1 << 20) ? "MiB" : "KiB");
  return comm + " " + op + size;
}

}  // namespace

// One collective, prepared: `start` issues it (blocking when req is null), `finish` runs after it completed
// (division for avg, copy back from a staging buffer).
struct MpiCommunicator::Plan {
  const char* op = "";
  int64_t bytes = 0;
  std::function<int(MPI_Request* req)> start;
  std::function<void()> finish;
};

MpiCommunicator::MpiCommunicator(MPI_Comm comm, std::string name, Watchdog* watchdog, WaitMode wait, Tracer* tracer)
    : comm_(MpiComm::Dup(comm)),
      name_(std::move(name)),
      watchdog_(watchdog),
      wait_(wait),
      tracer_(tracer),
      rank_(comm_.rank()),
      size_(comm_.size()) {}

namespace {

void CheckCpu(const torch::Tensor& t, const char* op, const std::string& comm, const char* what) {
  if (!t.defined()) throw CommError(std::string(op) + " on '" + comm + "': " + what + " tensor is undefined");
  if (!t.device().is_cpu()) {
    std::ostringstream msg;
    msg << op << " on '" << comm << "': " << what << " tensor is on " << t.device()
        << "; the MPI communicator takes CPU tensors (use the NCCL communicator for CUDA tensors).";
    throw CommError(msg.str());
  }
}

void CheckReducible(const torch::Tensor& t, ReduceOp op, const char* name, const std::string& comm) {
  const auto dt = t.scalar_type();
  if (NativeType(dt) == MPI_DATATYPE_NULL && !IsStaged16(dt)) {
    std::ostringstream msg;
    msg << name << " on '" << comm << "': dtype " << dt
        << " cannot be reduced; supported: float32, float64, bfloat16, float16, int32, int64.";
    throw CommError(msg.str());
  }
  if (op == ReduceOp::kAvg && !t.is_floating_point()) {
    std::ostringstream msg;
    msg << name << " on '" << comm << "': ReduceOp avg needs a floating-point tensor, got " << dt
        << "; reduce with sum and divide.";
    throw CommError(msg.str());
  }
}

// The buffer MPI works on: the tensor itself when MPI can use it directly, else a contiguous (fp32 for 16-bit)
// copy. `staged` tells whether results must be copied back.
torch::Tensor WorkBuffer(const torch::Tensor& t, bool reduce, bool* staged) {
  if (reduce && IsStaged16(t.scalar_type())) {
    *staged = true;
    return t.to(torch::kFloat).contiguous();
  }
  *staged = !t.is_contiguous();
  return *staged ? t.contiguous() : t;
}

}  // namespace

WorkPtr MpiCommunicator::Launch(Plan plan, bool async) {
  const uint64_t seq = seq_++;
  VLOG(2) << "[" << name_ << "] " << plan.op << " seq=" << seq << " bytes=" << plan.bytes << (async ? " async" : "");
  const bool traced = tracer_ && tracer_->enabled();
  const std::string trace_name = traced ? TraceName(name_, plan.op, plan.bytes) : std::string();
  if (!async) {
    Watchdog::Scope scope(watchdog_, name_, plan.op, seq, plan.bytes);
    Tracer::Span span(traced ? tracer_ : nullptr, trace_name, "comm");
    int rc = MPI_SUCCESS;
    if (wait_ == WaitMode::kSpin) {
      rc = plan.start(nullptr);
    } else {
      MPI_Request req = MPI_REQUEST_NULL;
      rc = plan.start(&req);
      if (rc == MPI_SUCCESS) rc = WaitForRequest(&req, wait_, plan.bytes);
    }
    if (rc != MPI_SUCCESS) internal::ThrowMpiError(rc, plan.op, __FILE__, __LINE__);
    if (plan.finish) plan.finish();
    return std::make_unique<CompletedWork>();
  }
  const uint64_t token = watchdog_ ? watchdog_->Begin(name_, plan.op, seq, plan.bytes) : 0;
  MPI_Request req = MPI_REQUEST_NULL;
  int rc = plan.start(&req);
  if (rc != MPI_SUCCESS) {
    if (watchdog_) watchdog_->End(token);
    internal::ThrowMpiError(rc, plan.op, __FILE__, __LINE__);
  }
  const uint64_t trace_id = traced ? tracer_->NextId() : 0;
  if (traced) tracer_->AsyncBegin(trace_name, "comm", trace_id, {{"bytes", double(plan.bytes)}, {"seq", double(seq)}});
  return std::make_unique<MpiWork>(req, std::move(plan.finish), watchdog_, token, wait_, tracer_, trace_name, trace_id,
                                   plan.bytes);
}

MpiCommunicator::Plan MpiCommunicator::PlanAllReduce(torch::Tensor& tensor, ReduceOp op) {
  CheckCpu(tensor, "AllReduce", name_, "input");
  CheckReducible(tensor, op, "AllReduce", name_);
  bool staged = false;
  torch::Tensor buf = WorkBuffer(tensor, /*reduce=*/true, &staged);
  const int count = CheckedCount(buf.numel(), "AllReduce", name_);
  const MPI_Datatype type = NativeType(buf.scalar_type());
  const MPI_Op mop = MpiOp(op);
  const MPI_Comm comm = comm_.get();
  const int size = size_;
  Plan plan;
  plan.op = "AllReduce";
  plan.bytes = tensor.numel() * static_cast<int64_t>(tensor.element_size());
  plan.start = [=](MPI_Request* req) {
    void* data = buf.data_ptr();
    return req ? MPI_Iallreduce(MPI_IN_PLACE, data, count, type, mop, comm, req)
               : MPI_Allreduce(MPI_IN_PLACE, data, count, type, mop, comm);
  };
  if (op == ReduceOp::kAvg || staged) {
    plan.finish = [=]() mutable {
      if (op == ReduceOp::kAvg) buf.div_(size);
      if (staged) tensor.copy_(buf);
    };
  }
  return plan;
}

MpiCommunicator::Plan MpiCommunicator::PlanReduceScatter(const torch::Tensor& input, torch::Tensor& output,
                                                         ReduceOp op) {
  CheckCpu(input, "ReduceScatter", name_, "input");
  CheckCpu(output, "ReduceScatter", name_, "output");
  CheckReducible(input, op, "ReduceScatter", name_);
  if (input.scalar_type() != output.scalar_type() || input.numel() != output.numel() * size_) {
    std::ostringstream msg;
    msg << "ReduceScatter on '" << name_ << "': input must have size() x output elements of the same dtype; got "
        << input.numel() << " " << input.scalar_type() << " in and " << output.numel() << " " << output.scalar_type()
        << " out with size() = " << size_ << ".";
    throw CommError(msg.str());
  }
  bool in_staged = false, out_staged = false;
  torch::Tensor in = WorkBuffer(input, /*reduce=*/true, &in_staged);
  torch::Tensor out = WorkBuffer(output, /*reduce=*/true, &out_staged);
  const int count = CheckedCount(out.numel(), "ReduceScatter", name_);
  const MPI_Datatype type = NativeType(in.scalar_type());
  const MPI_Op mop = MpiOp(op);
  const MPI_Comm comm = comm_.get();
  const int size = size_;
  Plan plan;
  plan.op = "ReduceScatter";
  plan.bytes = input.numel() * static_cast<int64_t>(input.element_size());
  plan.start = [=](MPI_Request* req) {
    return req ? MPI_Ireduce_scatter_block(in.data_ptr(), out.data_ptr(), count, type, mop, comm, req)
               : MPI_Reduce_scatter_block(in.data_ptr(), out.data_ptr(), count, type, mop, comm);
  };
  // `in` is captured so that a staged input lives until the collective completes.
  plan.finish = [=]() mutable {
    (void)in;
    if (op == ReduceOp::kAvg) out.div_(size);
    if (out_staged) output.copy_(out);
  };
  return plan;
}

MpiCommunicator::Plan MpiCommunicator::PlanAllGather(const torch::Tensor& input, torch::Tensor& output) {
  CheckCpu(input, "AllGather", name_, "input");
  CheckCpu(output, "AllGather", name_, "output");
  if (input.scalar_type() != output.scalar_type() || output.numel() != input.numel() * size_) {
    std::ostringstream msg;
    msg << "AllGather on '" << name_ << "': output must have size() x input elements of the same dtype; got "
        << input.numel() << " " << input.scalar_type() << " in and " << output.numel() << " " << output.scalar_type()
        << " out with size() = " << size_ << ".";
    throw CommError(msg.str());
  }
  bool in_staged = false, out_staged = false;
  torch::Tensor in = WorkBuffer(input, /*reduce=*/false, &in_staged);
  torch::Tensor out = WorkBuffer(output, /*reduce=*/false, &out_staged);
  // Native types where MPI has them, bytes otherwise (no arithmetic happens).
  MPI_Datatype type = NativeType(in.scalar_type());
  int64_t n = in.numel();
  if (type == MPI_DATATYPE_NULL) {
    type = MPI_BYTE;
    n *= in.element_size();
  }
  const int count = CheckedCount(n, "AllGather", name_);
  const MPI_Comm comm = comm_.get();
  Plan plan;
  plan.op = "AllGather";
  plan.bytes = output.numel() * static_cast<int64_t>(output.element_size());
  plan.start = [=](MPI_Request* req) {
    return req ? MPI_Iallgather(in.data_ptr(), count, type, out.data_ptr(), count, type, comm, req)
               : MPI_Allgather(in.data_ptr(), count, type, out.data_ptr(), count, type, comm);
  };
  plan.finish = [=]() mutable {
    (void)in;
    if (out_staged) output.copy_(out);
  };
  return plan;
}

MpiCommunicator::Plan MpiCommunicator::PlanBroadcast(torch::Tensor& tensor, int root) {
  CheckCpu(tensor, "Broadcast", name_, "input");
  if (root < 0 || root >= size_) {
    throw CommError("Broadcast on '" + name_ + "': root " + std::to_string(root) + " is not a rank of this " +
                    std::to_string(size_) + "-rank group");
  }
  bool staged = false;
  torch::Tensor buf = WorkBuffer(tensor, /*reduce=*/false, &staged);
  const int count = CheckedCount(buf.numel() * buf.element_size(), "Broadcast", name_);
  const MPI_Comm comm = comm_.get();
  Plan plan;
  plan.op = "Broadcast";
  plan.bytes = buf.numel() * static_cast<int64_t>(buf.element_size());
  plan.start = [=](MPI_Request* req) {
    return req ? MPI_Ibcast(buf.data_ptr(), count, MPI_BYTE, root, comm, req)
               : MPI_Bcast(buf.data_ptr(), count, MPI_BYTE, root, comm);
  };
  if (staged) plan.finish = [=]() mutable { tensor.copy_(buf); };
  return plan;
}

void MpiCommunicator::AllReduce(torch::Tensor& tensor, ReduceOp op) {
  Launch(PlanAllReduce(tensor, op), /*async=*/false);
}
WorkPtr MpiCommunicator::AllReduceAsync(torch::Tensor& tensor, ReduceOp op) {
  return Launch(PlanAllReduce(tensor, op), /*async=*/true);
}
void MpiCommunicator::ReduceScatter(const torch::Tensor& input, torch::Tensor& output, ReduceOp op) {
  Launch(PlanReduceScatter(input, output, op), false);
}
WorkPtr MpiCommunicator::ReduceScatterAsync(const torch::Tensor& input, torch::Tensor& output, ReduceOp op) {
  return Launch(PlanReduceScatter(input, output, op), true);
}
void MpiCommunicator::AllGather(const torch::Tensor& input, torch::Tensor& output) {
  Launch(PlanAllGather(input, output), false);
}
WorkPtr MpiCommunicator::AllGatherAsync(const torch::Tensor& input, torch::Tensor& output) {
  return Launch(PlanAllGather(input, output), true);
}
void MpiCommunicator::Broadcast(torch::Tensor& tensor, int root) { Launch(PlanBroadcast(tensor, root), false); }
WorkPtr MpiCommunicator::BroadcastAsync(torch::Tensor& tensor, int root) {
  return Launch(PlanBroadcast(tensor, root), true);
}

void MpiCommunicator::Barrier() {
  Plan plan;
  plan.op = "Barrier";
  const MPI_Comm comm = comm_.get();
  plan.start = [comm](MPI_Request* req) { return req ? MPI_Ibarrier(comm, req) : MPI_Barrier(comm); };
  Launch(std::move(plan), false);
}
WorkPtr MpiCommunicator::BarrierAsync() {
  Plan plan;
  plan.op = "Barrier";
  const MPI_Comm comm = comm_.get();
  plan.start = [comm](MPI_Request* req) { return MPI_Ibarrier(comm, req); };
  return Launch(std::move(plan), true);
}

}  // namespace lcl::cluster
