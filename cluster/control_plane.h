// ControlPlane: the rank-0 controller's messaging over its own MPI communicator (never mixed with gradient
// traffic). Rank 0 gathers one protobuf message from every rank, decides, and broadcasts the decision; any rank
// can raise a flag that all ranks learn at the same call (used for preemption signals).
//
//   ControlPlane control(MPI_COMM_WORLD, &watchdog);
//   RankStatus me; me.set_rank(control.rank()); me.set_signal(signals.Pending());
//   std::vector<RankStatus> all = control.Gather(me);            // filled on rank 0 only
//   Decision d; if (control.rank() == 0) d = Decide(all);
//   control.Broadcast(&d);                                        // every rank now holds rank 0's decision
#pragma once

#include <mpi.h>

#include <string>
#include <vector>

#include "cluster/mpi_comm.h"
#include "cluster/mpi_wait.h"
#include "cluster/watchdog.h"

namespace google::protobuf {
class MessageLite;
}

namespace lcl::cluster {

class ControlPlane {
 public:
  // `wait`: how a rank that arrives first waits for the others (mpi_wait.h).
  ControlPlane(MPI_Comm comm, Watchdog* watchdog = nullptr, WaitMode wait = WaitMode::kSleep);
  ControlPlane(const ControlPlane&) = delete;
  ControlPlane& operator=(const ControlPlane&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }

  // Serialized messages of all ranks, in rank order, on rank 0; empty elsewhere. Collective.
  std::vector<std::string> GatherBytes(const std::string& mine);
  // Rank 0's bytes on every rank. Collective.
  std::string BroadcastBytes(const std::string& from_root);

  template <class M>
  std::vector<M> Gather(const M& mine) {
    std::vector<std::string> raw = GatherBytes(mine.SerializeAsString());
    std::vector<M> out(raw.size());
    for (size_t r = 0; r < raw.size(); ++r) Parse(raw[r], &out[r], static_cast<int>(r));
    return out;
  }
  // In place: *msg becomes rank 0's message on every rank.
  template <class M>
  void Broadcast(M* msg) {
    std::string raw = BroadcastBytes(rank_ == 0 ? msg->SerializeAsString() : std::string());
    Parse(raw, msg, 0);
  }

  // True on every rank if `flag` is true on any rank. Collective.
  bool AnyTrue(bool flag);
  // The largest value over ranks, on every rank. Collective.
  int64_t Max(int64_t value);

 private:
  static void Parse(const std::string& raw, google::protobuf::MessageLite* msg, int from_rank);
  // Waits for a started nonblocking operation; `call` names it in the error.
  void Complete(int start_rc, MPI_Request* req, const char* call);

  MpiComm comm_;  // a duplicate owned here: control messages never match gradient traffic
  Watchdog* watchdog_;
  WaitMode wait_;
  int rank_ = 0;
  int size_ = 1;
  uint64_t seq_ = 0;
};

}  // namespace lcl::cluster
