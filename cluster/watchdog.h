// Watchdog: a thread that times every collective in flight. One that has not finished after the timeout
// (a rank that never joins, a dead peer, a deadlock) is reported with rank, communicator, op, sequence number and
// bytes, and the job ends with kExitCommTimeout on every rank (MPI_Abort), instead of hanging forever.
//
//   Watchdog dog(rank, std::chrono::seconds(600));
//   { Watchdog::Scope s(&dog, "dp", "AllReduce", seq, bytes); MPI_Allreduce(...); }
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>

namespace lcl::cluster {

struct CollectiveRecord {
  std::string comm;  // communicator name ("world", "tp", "dp")
  std::string op;    // "AllReduce", ...
  uint64_t seq = 0;  // the collective's sequence number on that communicator
  int64_t bytes = 0;
  std::chrono::steady_clock::time_point start;
  // Optional: true once the collective has finished although nobody called End() yet (a stream-ordered NCCL
  // collective whose completion no one has observed). Asked, under the watchdog's lock, before a timeout fires.
  std::function<bool()> done;
};

class Watchdog {
 public:
  // Called once, from the watchdog thread, with the report line and the stuck collective. The default ends the
  // job (log, flush, MPI_Abort(kExitCommTimeout)); tests inject their own.
  using FireHandler = std::function<void(const std::string& report, const CollectiveRecord& record)>;

  Watchdog(int rank, std::chrono::milliseconds timeout, FireHandler on_fire = nullptr);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  std::chrono::milliseconds timeout() const { return timeout_; }
  // Registers a collective as in flight; returns a token for End(). `done` (may be empty): see CollectiveRecord.
  // It runs on the watchdog thread with the watchdog's lock held, so End() from its owner cannot race it: an owner
  // that frees what `done` reads must call End() first.
  uint64_t Begin(const std::string& comm, const char* op, uint64_t seq, int64_t bytes,
                 std::function<bool()> done = nullptr);
  void End(uint64_t token);
  size_t InFlight() const;
  bool fired() const;

  // RAII bracket around one blocking collective. `dog` may be null (no watchdog).
  class Scope {
   public:
    Scope(Watchdog* dog, const std::string& comm, const char* op, uint64_t seq, int64_t bytes)
        : dog_(dog), token_(dog ? dog->Begin(comm, op, seq, bytes) : 0) {}
    ~Scope() {
      if (dog_) dog_->End(token_);
    }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    Watchdog* dog_;
    uint64_t token_;
  };

 private:
  void Run();
  static void EndJob(const std::string& report, const CollectiveRecord& record);

  const int rank_;
  const std::chrono::milliseconds timeout_;
  FireHandler on_fire_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, CollectiveRecord> in_flight_;  // ordered by token = issue order, oldest first
  uint64_t next_token_ = 1;
  bool stop_ = false;
  bool fired_ = false;
  std::thread thread_;
};

}  // namespace lcl::cluster
