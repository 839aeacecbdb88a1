// The NCCL backend's check macros and RAII owners of its C handles (private to nccl_communicator.cc; this header
// needs the CUDA and NCCL headers). Every handle has a one-line owner, so a throw anywhere in a constructor or a
// launch frees what was made before it:
//   NcclComm       ncclComm_t, move-only; Abort() (ncclCommAbort, after a timeout or an async error) is separate
//                  from the destructor's normal ncclCommDestroy, which an aborted communicator skips.
//   CudaStream     cudaStream_t (cudaStreamDestroy).
//   CudaBuffer     device memory (cudaFree).
//   CudaEventPool  ordering-only CUDA events, leased per collective and returned (cluster/handle_pool.h).
//
//   NcclComm comm = NcclComm::InitRank(size, id, rank);
//   CudaStream stream = CreateCudaStream(cudaStreamNonBlocking);
//   LCL_NCCL_CHECK(ncclAllReduce(buf, buf, n, ncclFloat32, ncclSum, comm.get(), stream.get()), comm.get());
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <atomic>
#include <cstddef>
#include <memory>
#include <string>
#include <type_traits>

#include "cluster/handle_pool.h"

namespace lcl::cluster::internal {
// "2.28.9": the NCCL library loaded at run time.
std::string NcclVersionString();
// Throw lcl::CommError with the call text, file:line, the library's error string (and NCCL's last error on `comm`
// and its version).
[[noreturn]] void ThrowNcclError(ncclResult_t rc, const char* call, const char* file, int line, ncclComm_t comm);
[[noreturn]] void ThrowCudaError(cudaError_t rc, const char* call, const char* file, int line);
}  // namespace lcl::cluster::internal

// `comm` may be null (before a communicator exists). ncclInProgress is success for nonblocking communicators.
#define LCL_NCCL_CHECK(call, comm)                                                             \
  do {                                                                                         \
    ncclResult_t lcl_nccl_rc_ = (call);                                                        \
    if (lcl_nccl_rc_ != ncclSuccess && lcl_nccl_rc_ != ncclInProgress) {                       \
      ::lcl::cluster::internal::ThrowNcclError(lcl_nccl_rc_, #call, __FILE__, __LINE__, comm); \
    }                                                                                          \
  } while (0)

#define LCL_CUDA_CHECK(call)                                                             \
  do {                                                                                   \
    cudaError_t lcl_cuda_rc_ = (call);                                                   \
    if (lcl_cuda_rc_ != cudaSuccess) {                                                   \
      ::lcl::cluster::internal::ThrowCudaError(lcl_cuda_rc_, #call, __FILE__, __LINE__); \
    }                                                                                    \
  } while (0)

namespace lcl::cluster {

class NcclComm {
 public:
  // Empty: owns nothing (get() is null).
  NcclComm() = default;
  // ncclCommInitRank: collective over the `nranks` ranks that hold `id`.
  static NcclComm InitRank(int nranks, const ncclUniqueId& id, int rank);
  // ncclCommDestroy (flushes the communicator's pending work) unless it was aborted or is empty.
  ~NcclComm();
  NcclComm(NcclComm&& other) noexcept;
  NcclComm& operator=(NcclComm&& other) noexcept;
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  ncclComm_t get() const { return comm_; }
  // ncclCommAbort: pending collectives end and the communicator is freed, so no call may use get() afterwards;
  // the destructor then has nothing to destroy. Idempotent; safe from any thread.
  void Abort() noexcept;
  bool aborted() const { return aborted_.load(); }

 private:
  explicit NcclComm(ncclComm_t comm) : comm_(comm) {}
  void Release() noexcept;

  ncclComm_t comm_ = nullptr;
  std::atomic<bool> aborted_{false};
};

// One-line deleters (the return code has nowhere to go from a destructor).
struct CudaStreamDeleter {
  void operator()(cudaStream_t s) const noexcept { cudaStreamDestroy(s); }
};
struct CudaFreeDeleter {
  void operator()(void* p) const noexcept { cudaFree(p); }
};
using CudaStream = std::unique_ptr<std::remove_pointer_t<cudaStream_t>, CudaStreamDeleter>;
using CudaBuffer = std::unique_ptr<void, CudaFreeDeleter>;

// cudaStreamCreateWithFlags on the current device.
CudaStream CreateCudaStream(unsigned int flags);
// cudaMalloc of `bytes` on the current device.
CudaBuffer AllocateCudaBuffer(size_t bytes);

// Events that only order streams (cudaEventDisableTiming: cheaper to record and to wait on), created on the
// device current at the first Acquire() that needs a new one.
class CudaEventPool : public HandlePool<cudaEvent_t> {
 public:
  CudaEventPool();
};

}  // namespace lcl::cluster
