// ClusterContext: builds grid, watchdog, communicators and control plane for this process.
#include "cluster/cluster_context.h"

#include <torch/cuda.h>

#include "cluster/log.h"
#include "cluster/mpi_communicator.h"
#include "cluster/nccl_communicator.h"

namespace lcl::cluster {

ClusterContext::ClusterContext(const MpiSession& mpi, const ClusterOptions& options) : mpi_(mpi) {
  watchdog_ = std::make_unique<Watchdog>(mpi.rank(), options.collective_timeout);
  tracer_ = std::make_unique<Tracer>(mpi.rank());
  grid_ = std::make_unique<ProcessGrid>(MPI_COMM_WORLD, options.tp);
  const bool cuda = options.use_cuda && torch::cuda::is_available();
  if (cuda) {
    device_ = torch::Device(torch::kCUDA, mpi.local_rank() % static_cast<int>(torch::cuda::device_count()));
    const int dev = device_.index();
    world_ = std::make_unique<NcclCommunicator>(grid_->world_comm(), "world", dev, watchdog_.get(),
                                                options.collective_timeout);
    tp_ = std::make_unique<NcclCommunicator>(grid_->tp_comm(), "tp", dev, watchdog_.get(), options.collective_timeout);
    dp_ = std::make_unique<NcclCommunicator>(grid_->dp_comm(), "dp", dev, watchdog_.get(), options.collective_timeout);
  } else {
    Tracer* trace = tracer_.get();
    world_ = std::make_unique<MpiCommunicator>(grid_->world_comm(), "world", watchdog_.get(), options.wait, trace);
    tp_ = std::make_unique<MpiCommunicator>(grid_->tp_comm(), "tp", watchdog_.get(), options.wait, trace);
    dp_ = std::make_unique<MpiCommunicator>(grid_->dp_comm(), "dp", watchdog_.get(), options.wait, trace);
  }
  control_ = std::make_unique<ControlPlane>(grid_->world_comm(), watchdog_.get(), options.wait);
  if (mpi.rank() == 0) {
    LOG(INFO) << "cluster: " << grid_->shape().ToString() << ", backend " << world_->backend() << ", device " << device_
              << ", MPI thread level " << MpiSession::ThreadLevelName(mpi.thread_level()) << ", MPI wait "
              << WaitModeName(options.wait) << ", collective timeout " << options.collective_timeout.count() << " ms"
              << ", shared-memory single copy " << mpi.single_copy();
  }
}

ClusterContext::~ClusterContext() = default;

}  // namespace lcl::cluster
