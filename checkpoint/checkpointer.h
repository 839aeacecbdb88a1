// Checkpointer: sharded saves committed by a rank-0 controller (DESIGN.md "Checkpoints").
// Every rank writes its shard into `step_<N>.tmp/` and fsyncs; ranks report files and checksums to rank 0;
// rank 0 checks the reports (every tensor's shards tile its global shape), writes `manifest.pb` last, renames the
// directory to `step_<N>`, fsyncs the parent, then atomically replaces `latest`; retention runs only after that.
// A failure on any rank abandons the save on every rank (logged with rank and reason); training goes on unless
// `fail_on_error`. Async saves write on a background thread, one save in flight, from a host snapshot (see
// snapshot.h): taken inside Save(), or, with `defer_snapshot`, only of what is not yet written when the caller
// calls ReleaseState() before it next modifies the saved tensors. GPU tensors are copied inside Save() into
// pinned host buffers, reused from save to save.
//
//   CheckpointOptions options;
//   options.run_dir = "runs/a";
//   options.defer_snapshot = true;
//   Checkpointer ckpt(MPI_COMM_WORLD, options, &watchdog);
//   ckpt.Save(step, std::move(state));   // async: returns once the writer has started
//   /* forward, backward */              // the writer reads the live tensors meanwhile
//   ckpt.ReleaseState();                  // before the optimizer step: copies what is not written yet
//   ckpt.Wait();                          // before exit
#pragma once

#include <mpi.h>
#include <torch/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "checkpoint/manifest.pb.h"
#include "checkpoint/snapshot.h"
#include "cluster/control_plane.h"
#include "cluster/watchdog.h"

namespace lcl::checkpoint {

constexpr uint32_t kFormatVersion = 1;

// This rank's piece of one tensor: `data` is the box [offsets, offsets + data.sizes()) of the global tensor.
// A tensor replicated over ranks is given by one rank only (its owner), so it is stored once.
struct LocalShard {
  std::string name;
  torch::Tensor data;
  std::vector<int64_t> global_shape;
  std::vector<int64_t> offsets;
};

struct CheckpointState {
  std::vector<LocalShard> shards;
  SamplerState sampler;
  int64_t optimizer_step = 0;
  int64_t metrics_step = 0;
  std::string config;  // effective config, text format (rank 0's is stored)
  std::map<std::string, std::string> metadata;
  std::string rng_cpu;  // this rank's generator states
  std::string rng_cuda;
};

struct CheckpointOptions {
  std::string run_dir;
  int keep_last = 3;   // committed steps kept (0 = all)
  int keep_every = 0;  // also keep every step that is a multiple of this (0 = none)
  bool async = true;   // write on a background thread after a host snapshot
  // Async: Save() copies nothing from CPU tensors; the caller must call ReleaseState() before it modifies any
  // tensor it saved (the trainer does, before the optimizer step), and the stall is what is left to copy then.
  bool defer_snapshot = false;
  bool fail_on_error = false;  // a failed save throws instead of being abandoned with a warning
  GridShape grid;
  // Test hook: pause between protocol phases so fault tests can kill a rank inside each window.
  std::chrono::milliseconds phase_delay{0};
};

struct SaveResult {
  int64_t step = -1;
  bool committed = false;
  std::string reason;   // why it was abandoned
  double stall_ms = 0;  // how long Save() and ReleaseState() blocked the caller
  double write_ms = 0;  // writer start to commit
  uint64_t bytes = 0;   // this rank's shard
};

class Checkpointer {
 public:
  Checkpointer(MPI_Comm comm, CheckpointOptions options, cluster::Watchdog* watchdog = nullptr);
  ~Checkpointer();
  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;

  // Collective. See the file comment. Throws CheckpointError only with fail_on_error (or for bad arguments).
  void Save(int64_t step, CheckpointState state);
  // Not collective; blocks until the save in flight no longer reads the tensors given to Save(): copies to host
  // memory whatever the writer has not written yet. Call it before modifying them; a no-op when nothing is lent.
  void ReleaseState();
  // Collective. Waits for the save in flight (if any); returns its result.
  SaveResult Wait();
  const SaveResult& last() const { return last_; }

  static std::string StepDirName(int64_t step);  // "step_00000100"
  // Rank 0 at start: removes `step_*.tmp` directories a killed run left behind; returns how many.
  static int CleanStaleTmp(const std::string& run_dir);

 private:
  void Write(int64_t step, CheckpointState state, Snapshot* bytes, double stall_ms);
  std::string Commit(int64_t step, const std::vector<ShardReport>& reports, const CheckpointState& state);
  void Retain(int64_t committed_step);
  void Pause() const;

  CheckpointOptions options_;
  std::unique_ptr<cluster::ControlPlane> control_;  // own communicator: safe to use from the writer thread
  std::thread writer_;
  // Host snapshot buffers, reused from save to save: fresh memory costs page faults (slow on some VMs), and the
  // save in flight is always finished before the next snapshot overwrites them.
  struct HostBuffer {
    torch::Tensor tensor;
    bool pinned = false;
  };
  std::map<std::string, HostBuffer> snapshot_;
  std::unique_ptr<Snapshot> lent_;  // the save in flight's bytes; the writer holds it until Wait() joins
  SaveResult pending_;
  SaveResult last_;
};

}  // namespace lcl::checkpoint
