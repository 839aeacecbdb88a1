// Work: the handle of an asynchronous collective (after c10d's Work). Whoever issued it owns it and must
// Wait() before reading the output tensor or issuing dependent collectives.
//
//   auto work = comm.AllReduceAsync(grad, ReduceOp::kSum);
//   /* overlap compute */
//   work->Wait();  // grad now holds the sum
#pragma once

#include <chrono>
#include <memory>

namespace lcl::cluster {

class Work {
 public:
  virtual ~Work() = default;
  // Non-blocking: true once the collective has finished and its output is in place. Drives MPI progress.
  virtual bool IsCompleted() = 0;
  // Blocks until the collective finishes (the watchdog ends the job if it never does). Throws CommError if the
  // collective failed.
  virtual void Wait() = 0;
  // Blocks at most `timeout`; returns false if the collective is still running (it stays valid and can be
  // waited on again). Throws CommError if the collective failed.
  virtual bool Wait(std::chrono::milliseconds timeout) = 0;
};

using WorkPtr = std::unique_ptr<Work>;

// A Work that is already complete (blocking collectives, empty tensors).
class CompletedWork final : public Work {
 public:
  bool IsCompleted() override { return true; }
  void Wait() override {}
  bool Wait(std::chrono::milliseconds) override { return true; }
};

}  // namespace lcl::cluster
