// Communicator: the one collective interface over both backends (DESIGN.md "Communicator"). Every collective
// exists in a blocking form and an async form returning a Work. Collectives must be issued in the same order on
// every rank of the group (as in MPI and NCCL).
//
//   MpiCommunicator tp(grid.tp_comm(), "tp", &watchdog);
//   tp.AllReduce(partial, ReduceOp::kSum);               // blocking, in place
//   WorkPtr w = tp.AllGatherAsync(shard, full);          // full: [n * shard.size(0), ...], preallocated
//   w->Wait();                                           // full = cat(shards of ranks 0..n-1)
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <string>

#include "cluster/work.h"

namespace lcl::cluster {

enum class ReduceOp { kSum, kAvg, kMax, kMin };
const char* ReduceOpName(ReduceOp op);

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "mpi" or "nccl".
  virtual const char* backend() const = 0;
  // A name for logs and watchdog reports ("world", "tp", "dp").
  virtual const std::string& name() const = 0;

  // In place: every rank's `tensor` becomes the reduction over ranks. kAvg divides the sum by size()
  // (floating-point dtypes only).
  virtual void AllReduce(torch::Tensor& tensor, ReduceOp op) = 0;
  virtual WorkPtr AllReduceAsync(torch::Tensor& tensor, ReduceOp op) = 0;

  // `input` has size() * output.numel() elements; rank r gets the reduction of chunk r (dim-0 blocks of the
  // flattened input) into `output`.
  virtual void ReduceScatter(const torch::Tensor& input, torch::Tensor& output, ReduceOp op) = 0;
  virtual WorkPtr ReduceScatterAsync(const torch::Tensor& input, torch::Tensor& output, ReduceOp op) = 0;

  // `output` has size() * input.numel() elements; chunk r of the flattened output is rank r's `input`.
  virtual void AllGather(const torch::Tensor& input, torch::Tensor& output) = 0;
  virtual WorkPtr AllGatherAsync(const torch::Tensor& input, torch::Tensor& output) = 0;

  // In place: every rank's `tensor` becomes `root`'s.
  virtual void Broadcast(torch::Tensor& tensor, int root) = 0;
  virtual WorkPtr BroadcastAsync(torch::Tensor& tensor, int root) = 0;

  virtual void Barrier() = 0;
};

}  // namespace lcl::cluster
