// ClusterContext: everything distributed that one process holds, built once in `main` and passed down (no
// globals): the MPI session, the DP x TP grid, the watchdog, a communicator for the world, the TP group and the
// DP group, and the rank-0 control plane.
//
//   MpiSession mpi(&argc, &argv);
//   ClusterOptions options;
//   options.tp = 2;
//   ClusterContext ctx(mpi, options);
//   ctx.dp().AllReduce(grad, ReduceOp::kAvg);
#pragma once

#include <torch/types.h>

#include <chrono>
#include <memory>

#include "cluster/communicator.h"
#include "cluster/control_plane.h"
#include "cluster/mpi_session.h"
#include "cluster/mpi_wait.h"
#include "cluster/process_grid.h"
#include "cluster/trace.h"
#include "cluster/watchdog.h"

namespace lcl::cluster {

struct ClusterOptions {
  int tp = 1;
  // A collective still running after this ends the job (kExitCommTimeout) instead of hanging.
  std::chrono::milliseconds collective_timeout = std::chrono::minutes(10);
  // Use cuda:<local_rank> and NCCL when CUDA is available; CPU and MPI otherwise.
  bool use_cuda = true;
  // How MPI waits (the CPU communicators and the control plane): see mpi_wait.h.
  WaitMode wait = WaitMode::kSleep;
};

class ClusterContext {
 public:
  ClusterContext(const MpiSession& mpi, const ClusterOptions& options);
  ~ClusterContext();
  ClusterContext(const ClusterContext&) = delete;
  ClusterContext& operator=(const ClusterContext&) = delete;

  const MpiSession& mpi() const { return mpi_; }
  const ProcessGrid& grid() const { return *grid_; }
  Watchdog& watchdog() { return *watchdog_; }
  Communicator& world() { return *world_; }
  Communicator& tp() { return *tp_; }
  Communicator& dp() { return *dp_; }
  ControlPlane& control() { return *control_; }
  // This rank's step timeline (off until someone enables it; the communicators record into it).
  Tracer& tracer() { return *tracer_; }
  // cuda:<local_rank> or cpu; tensors given to the communicators live here.
  torch::Device device() const { return device_; }

 private:
  const MpiSession& mpi_;
  torch::Device device_{torch::kCPU};
  std::unique_ptr<Watchdog> watchdog_;  // first in, last out: communicators report to it
  std::unique_ptr<Tracer> tracer_;
  std::unique_ptr<ProcessGrid> grid_;
  std::unique_ptr<Communicator> world_;
  std::unique_ptr<Communicator> tp_;
  std::unique_ptr<Communicator> dp_;
  std::unique_ptr<ControlPlane> control_;
};

}  // namespace lcl::cluster
