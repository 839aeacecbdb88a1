// NcclCommunicator: the Communicator for CUDA tensors. Rank 0 of the group makes the ncclUniqueId and
// broadcasts it over MPI. Collectives run on the communicator's own stream, ordered after the caller's compute
// stream with an event (so the host never syncs to launch). The blocking forms block the device, not the host: the
// compute stream waits for the collective's done event, and the host goes on (Barrier alone waits on the host).
// Work::Wait() polls the completion event and
// ncclCommGetAsyncError; a collective still running after the timeout, or an async NCCL error, aborts the NCCL
// communicator (ncclCommAbort) and throws lcl::CommError naming rank, op, sequence number and NCCL version.
//
// Built where CUDA and NCCL headers exist (LCL_WITH_NCCL); elsewhere the constructor throws lcl::NotBuiltError.
//
//   NcclCommunicator dp(grid.dp_comm(), "dp", /*device=*/mpi.local_rank(), &watchdog);
//   dp.AllReduce(grad_cuda, ReduceOp::kAvg);
#pragma once

#include <mpi.h>

#include <chrono>
#include <memory>
#include <string>

#include "cluster/communicator.h"
#include "cluster/watchdog.h"

namespace lcl::cluster {

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `comm`. `device` is the CUDA ordinal this rank uses.
  NcclCommunicator(MPI_Comm comm, std::string name, int device, Watchdog* watchdog = nullptr,
                   std::chrono::milliseconds timeout = std::chrono::minutes(10));
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  // True when this binary was built with the NCCL backend.
  static bool Built();
  // "2.28.9" (the NCCL library loaded at run time), or "not built".
  static std::string Version();

  int rank() const override;
  int size() const override;
  const char* backend() const override { return "nccl"; }
  const std::string& name() const override;

  void AllReduce(torch::Tensor& tensor, ReduceOp op) override;
  WorkPtr AllReduceAsync(torch::Tensor& tensor, ReduceOp op) override;
  void ReduceScatter(const torch::Tensor& input, torch::Tensor& output, ReduceOp op) override;
  WorkPtr ReduceScatterAsync(const torch::Tensor& input, torch::Tensor& output, ReduceOp op) override;
  void AllGather(const torch::Tensor& input, torch::Tensor& output) override;
  WorkPtr AllGatherAsync(const torch::Tensor& input, torch::Tensor& output) override;
  void Broadcast(torch::Tensor& tensor, int root) override;
  WorkPtr BroadcastAsync(torch::Tensor& tensor, int root) override;
  void Barrier() override;

  // Aborts the NCCL communicator: pending and later collectives fail instead of hanging.
  void Abort();

  struct Impl;  // opaque: NCCL and CUDA types stay out of this header

 private:
  // Orders the compute stream after `work` and keeps it until a later call sees it complete.
  void Order(WorkPtr work);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lcl::cluster
