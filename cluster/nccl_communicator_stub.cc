// NcclCommunicator for builds without NCCL (LCL_WITH_NCCL=OFF or no CUDA/NCCL found): it links, and using it
// says how to get the real one.
#include "cluster/errors.h"
#include "cluster/nccl_communicator.h"

namespace lcl::cluster {

struct NcclCommunicator::Impl {};

NcclCommunicator::NcclCommunicator(MPI_Comm, std::string, int, Watchdog*, std::chrono::milliseconds) {
  throw NotBuiltError(
      "the NCCL communicator is not built into this lcl binary. Rebuild where CUDA and NCCL are installed "
      "(cmake -DLCL_WITH_NCCL=ON -DLCL_CUDA_ROOT=/usr/local/cuda), or run on CPU (MPI backend).");
}
NcclCommunicator::~NcclCommunicator() = default;
bool NcclCommunicator::Built() { return false; }
std::string NcclCommunicator::Version() { return "not built"; }
int NcclCommunicator::rank() const { return 0; }
int NcclCommunicator::size() const { return 0; }
const std::string& NcclCommunicator::name() const {
  static const std::string kName = "nccl (not built)";
  return kName;
}
void NcclCommunicator::AllReduce(torch::Tensor&, ReduceOp) {}
WorkPtr NcclCommunicator::AllReduceAsync(torch::Tensor&, ReduceOp) { return nullptr; }
void NcclCommunicator::ReduceScatter(const torch::Tensor&, torch::Tensor&, ReduceOp) {}
WorkPtr NcclCommunicator::ReduceScatterAsync(const torch::Tensor&, torch::Tensor&, ReduceOp) { return nullptr; }
void NcclCommunicator::AllGather(const torch::Tensor&, torch::Tensor&) {}
WorkPtr NcclCommunicator::AllGatherAsync(const torch::Tensor&, torch::Tensor&) { return nullptr; }
void NcclCommunicator::Broadcast(torch::Tensor&, int) {}
WorkPtr NcclCommunicator::BroadcastAsync(torch::Tensor&, int) { return nullptr; }
void NcclCommunicator::Barrier() {}
void NcclCommunicator::Abort() {}

}  // namespace lcl::cluster
