// MpiCommunicator: the Communicator for CPU tensors over an MPI communicator (its own duplicate of it).
// Async collectives use the nonblocking routines (MPI_Iallreduce, ...). Blocking ones wait as `wait` says: kSleep
// (the default) issues the nonblocking routine and waits without holding the core (mpi_wait.h); kSpin calls the
// blocking MPI routine, whose busy wait has the lowest latency. With a tracer, every collective is on the timeline
// (blocking: a span; async: from launch to the test or wait that saw it complete). Supports float32, float64, bfloat16,
// float16, int32, int64 for reductions and any dtype for AllGather/Broadcast. MPI has no 16-bit float types: bf16/fp16
// reductions are staged through fp32 (one rounding at the end, so the result is the correctly rounded fp32 reduction).
// Non-contiguous tensors are staged through a contiguous copy and copied back.
//
//   MpiCommunicator dp(grid.dp_comm(), "dp", &watchdog);
//   dp.AllReduce(grads, ReduceOp::kAvg);
#pragma once

#include <mpi.h>

#include <atomic>

#include "cluster/communicator.h"
#include "cluster/mpi_comm.h"
#include "cluster/mpi_wait.h"
#include "cluster/trace.h"
#include "cluster/watchdog.h"

namespace lcl::cluster {

class MpiCommunicator final : public Communicator {
 public:
  // `watchdog` and `tracer` may be null (no timeout, no timeline). `comm` is duplicated; the caller keeps ownership
  // of it.
  MpiCommunicator(MPI_Comm comm, std::string name, Watchdog* watchdog = nullptr, WaitMode wait = WaitMode::kSleep,
                  Tracer* tracer = nullptr);
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* backend() const override { return "mpi"; }
  const std::string& name() const override { return name_; }
  MPI_Comm comm() const { return comm_.get(); }
  // Collectives issued so far (each has this sequence number in watchdog reports).
  uint64_t sequence() const { return seq_.load(); }

  void AllReduce(torch::Tensor& tensor, ReduceOp op) override;
  WorkPtr AllReduceAsync(torch::Tensor& tensor, ReduceOp op) override;
  void ReduceScatter(const torch::Tensor& input, torch::Tensor& output, ReduceOp op) override;
  WorkPtr ReduceScatterAsync(const torch::Tensor& input, torch::Tensor& output, ReduceOp op) override;
  void AllGather(const torch::Tensor& input, torch::Tensor& output) override;
  WorkPtr AllGatherAsync(const torch::Tensor& input, torch::Tensor& output) override;
  void Broadcast(torch::Tensor& tensor, int root) override;
  WorkPtr BroadcastAsync(torch::Tensor& tensor, int root) override;
  void Barrier() override;
  WorkPtr BarrierAsync();

 private:
  struct Plan;  // buffers, datatype and fix-ups of one collective (mpi_communicator.cc)
  Plan PlanAllReduce(torch::Tensor& tensor, ReduceOp op);
  Plan PlanReduceScatter(const torch::Tensor& input, torch::Tensor& output, ReduceOp op);
  Plan PlanAllGather(const torch::Tensor& input, torch::Tensor& output);
  Plan PlanBroadcast(torch::Tensor& tensor, int root);
  // Issues the collective: blocking (returns a CompletedWork) or async (returns the pending Work).
  WorkPtr Launch(Plan plan, bool async);

  MpiComm comm_;  // our own duplicate: its messages never match those of another user of the same group
  std::string name_;
  Watchdog* watchdog_;
  WaitMode wait_;
  Tracer* tracer_;
  int rank_ = 0;
  int size_ = 1;
  std::atomic<uint64_t> seq_{0};
};

}  // namespace lcl::cluster
