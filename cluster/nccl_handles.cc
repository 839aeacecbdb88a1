// The NCCL backend's error reporting and the owners of its NCCL and CUDA handles.
#include "cluster/nccl_handles.h"

#include "cluster/log.h"

#include <sstream>
#include <utility>

#include "cluster/errors.h"

namespace lcl::cluster {
namespace internal {

std::string NcclVersionString() {
  int v = 0;
  if (ncclGetVersion(&v) != ncclSuccess) return "unknown";
  // NCCL >= 2.9 encodes major*10000 + minor*100 + patch.
  std::ostringstream s;
  s << v / 10000 << "." << (v % 10000) / 100 << "." << v % 100;
  return s.str();
}

void ThrowNcclError(ncclResult_t rc, const char* call, const char* file, int line, ncclComm_t comm) {
  std::ostringstream msg;
  msg << "NCCL call failed: " << call << " at " << file << ":" << line << ": " << ncclGetErrorString(rc);
  if (comm) msg << " (" << ncclGetLastError(comm) << ")";
  msg << " [NCCL " << NcclVersionString() << "]";
  throw CommError(msg.str());
}

void ThrowCudaError(cudaError_t rc, const char* call, const char* file, int line) {
  std::ostringstream msg;
  msg << "CUDA call failed: " << call << " at " << file << ":" << line << ": " << cudaGetErrorString(rc);
  throw CommError(msg.str());
}

}  // namespace internal

NcclComm NcclComm::InitRank(int nranks, const ncclUniqueId& id, int rank) {
  ncclComm_t comm = nullptr;
  // On failure NCCL frees what it allocated and leaves `comm` null: there is nothing to own.
  LCL_NCCL_CHECK(ncclCommInitRank(&comm, nranks, id, rank), nullptr);
  return NcclComm(comm);
}

NcclComm::~NcclComm() { Release(); }

NcclComm::NcclComm(NcclComm&& other) noexcept
    : comm_(std::exchange(other.comm_, nullptr)), aborted_(other.aborted_.exchange(false)) {}

NcclComm& NcclComm::operator=(NcclComm&& other) noexcept {
  if (this != &other) {
    Release();
    comm_ = std::exchange(other.comm_, nullptr);
    aborted_.store(other.aborted_.exchange(false));
  }
  return *this;
}

void NcclComm::Abort() noexcept {
  if (comm_ == nullptr || aborted_.exchange(true)) return;
  const ncclResult_t rc = ncclCommAbort(comm_);
  // Abort runs on error paths that are already throwing: its own failure can only be logged.
  if (rc != ncclSuccess) LOG(WARNING) << "ncclCommAbort failed: " << ncclGetErrorString(rc);
}

void NcclComm::Release() noexcept {
  if (comm_ == nullptr) return;
  // An aborted communicator was torn down by ncclCommAbort; destroying it again would be a double free.
  if (!aborted_.load()) {
    const ncclResult_t rc = ncclCommDestroy(comm_);
    if (rc != ncclSuccess) LOG(WARNING) << "ncclCommDestroy failed: " << ncclGetErrorString(rc);
  }
  comm_ = nullptr;
  aborted_.store(false);
}

CudaStream CreateCudaStream(unsigned int flags) {
  cudaStream_t s = nullptr;
  LCL_CUDA_CHECK(cudaStreamCreateWithFlags(&s, flags));
  return CudaStream(s);
}

CudaBuffer AllocateCudaBuffer(size_t bytes) {
  void* p = nullptr;
  LCL_CUDA_CHECK(cudaMalloc(&p, bytes));
  return CudaBuffer(p);
}

namespace {
cudaEvent_t CreateOrderingEvent() {
  cudaEvent_t e = nullptr;
  LCL_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  return e;
}
// Safe on an event still pending: CUDA defers the release until it completes.
void DestroyEvent(cudaEvent_t e) { cudaEventDestroy(e); }
}  // namespace

CudaEventPool::CudaEventPool() : HandlePool<cudaEvent_t>(CreateOrderingEvent, DestroyEvent) {}

}  // namespace lcl::cluster
