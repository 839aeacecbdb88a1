// NcclCommunicator: NCCL collectives on a private stream, ordered after the compute stream with CUDA events.
#include "cluster/nccl_communicator.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <sstream>
#include <thread>

#ifdef LCL_TORCH_HAS_CUDA
#include <c10/cuda/CUDAStream.h>
#endif

#include "cluster/check.h"
#include "cluster/errors.h"
#include "cluster/log.h"

namespace lcl::cluster {
namespace {

std::string NcclVersionString() {
  int v = 0;
  if (ncclGetVersion(&v) != ncclSuccess) return "unknown";
  // NCCL >= 2.9 encodes major*10000 + minor*100 + patch.
  std::ostringstream s;
  s << v / 10000 << "." << (v % 10000) / 100 << "." << v % 100;
  return s.str();
}

[[noreturn]] void ThrowNccl(ncclResult_t rc, const char* call, const char* file, int line, ncclComm_t comm) {
  std::ostringstream msg;
  msg << "NCCL call failed: " << call << " at " << file << ":" << line << ": " << ncclGetErrorString(rc);
  if (comm) msg << " (" << ncclGetLastError(comm) << ")";
  msg << " [NCCL " << NcclVersionString() << "]";
  throw CommError(msg.str());
}

[[noreturn]] void ThrowCuda(cudaError_t rc, const char* call, const char* file, int line) {
  std::ostringstream msg;
  msg << "CUDA call failed: " << call << " at " << file << ":" << line << ": " << cudaGetErrorString(rc);
  throw CommError(msg.str());
}

#define LCL_NCCL_CHECK(call, comm)                                                    \
  do {                                                                                \
    ncclResult_t lcl_nccl_rc_ = (call);                                               \
    if (lcl_nccl_rc_ != ncclSuccess && lcl_nccl_rc_ != ncclInProgress) {              \
      ThrowNccl(lcl_nccl_rc_, #call, __FILE__, __LINE__, comm);                       \
    }                                                                                 \
  } while (0)

#define LCL_CUDA_CHECK(call)                                                          \
  do {                                                                                \
    cudaError_t lcl_cuda_rc_ = (call);                                                \
    if (lcl_cuda_rc_ != cudaSuccess) ThrowCuda(lcl_cuda_rc_, #call, __FILE__, __LINE__); \
  } while (0)

ncclDataType_t NcclType(torch::ScalarType t, const char* op) {
  switch (t) {
    case torch::kFloat: return ncclFloat32;
    case torch::kDouble: return ncclFloat64;
    case torch::kBFloat16: return ncclBfloat16;
    case torch::kHalf: return ncclFloat16;
    case torch::kInt: return ncclInt32;
    case torch::kLong: return ncclInt64;
    case torch::kByte: return ncclUint8;
    case torch::kChar: return ncclInt8;
    default: break;
  }
  std::ostringstream msg;
  msg << op << ": dtype " << t << " is not supported by the NCCL communicator";
  throw CommError(msg.str());
}

ncclRedOp_t NcclOp(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kAvg: return ncclAvg;
    case ReduceOp::kMax: return ncclMax;
    case ReduceOp::kMin: return ncclMin;
  }
  return ncclSum;
}

// The stream the caller computes on: LibTorch's current stream where LibTorch has CUDA, else the legacy default.
cudaStream_t ComputeStream(int device) {
#ifdef LCL_TORCH_HAS_CUDA
  return c10::cuda::getCurrentCUDAStream(device).stream();
#else
  (void)device;
  return cudaStreamLegacy;
#endif
}

}  // namespace

struct NcclCommunicator::Impl {
  std::string name;
  int device = 0;
  int rank = 0;
  int size = 1;
  Watchdog* watchdog = nullptr;
  std::chrono::milliseconds timeout{600000};
  ncclComm_t comm = nullptr;
  bool aborted = false;
  cudaStream_t stream = nullptr;
  float* scratch = nullptr;  // [1] device float for Barrier
  uint64_t seq = 0;

  void CheckAsync() {
    ncclResult_t async = ncclSuccess;
    LCL_NCCL_CHECK(ncclCommGetAsyncError(comm, &async), comm);
    if (async != ncclSuccess && async != ncclInProgress) {
      std::string why = ncclGetErrorString(async);
      ncclCommAbort(comm);
      aborted = true;
      throw CommError("NCCL communicator '" + name + "' on rank " + std::to_string(rank) +
                      " reported an asynchronous error: " + why + " [NCCL " + NcclVersionString() +
                      "]; the communicator was aborted.");
    }
  }
};

namespace {

class NcclWork final : public Work {
 public:
  NcclWork(NcclCommunicator::Impl* impl, cudaEvent_t done, std::vector<torch::Tensor> keep, const char* op,
           uint64_t seq, uint64_t token)
      : impl_(impl), done_(done), keep_(std::move(keep)), op_(op), seq_(seq), token_(token) {}
  ~NcclWork() override {
    if (!finished_ && !impl_->aborted) cudaEventSynchronize(done_);
    Finish();
    cudaEventDestroy(done_);
  }
  bool IsCompleted() override {
    if (finished_) return true;
    impl_->CheckAsync();
    cudaError_t q = cudaEventQuery(done_);
    if (q == cudaErrorNotReady) return false;
    if (q != cudaSuccess) ThrowCuda(q, "cudaEventQuery(done)", __FILE__, __LINE__);
    Finish();
    return true;
  }
  void Wait() override {
    if (!Wait(impl_->timeout)) {
      ncclCommAbort(impl_->comm);
      impl_->aborted = true;
      std::ostringstream msg;
      msg << "NCCL " << op_ << " on '" << impl_->name << "' (rank " << impl_->rank << ", seq " << seq_
          << ") did not finish within " << impl_->timeout.count() << " ms; the communicator was aborted [NCCL "
          << NcclVersionString() << "].";
      throw CommError(msg.str());
    }
  }
  bool Wait(std::chrono::milliseconds timeout) override {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!IsCompleted()) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
    return true;
  }

 private:
  void Finish() {
    if (finished_) return;
    finished_ = true;
    if (impl_->watchdog) impl_->watchdog->End(token_);
    keep_.clear();
  }
  NcclCommunicator::Impl* impl_;
  cudaEvent_t done_;
  std::vector<torch::Tensor> keep_;  // inputs/outputs stay allocated until the collective is done
  const char* op_;
  uint64_t seq_;
  uint64_t token_;
  bool finished_ = false;
};

void CheckCuda(const torch::Tensor& t, const char* op, const std::string& name, int device) {
  if (!t.defined() || !t.is_cuda() || t.get_device() != device) {
    std::ostringstream msg;
    msg << op << " on '" << name << "': the NCCL communicator needs tensors on cuda:" << device << ", got "
        << (t.defined() ? t.device().str() : std::string("an undefined tensor"));
    throw CommError(msg.str());
  }
  if (!t.is_contiguous()) {
    throw CommError(std::string(op) + " on '" + name +
                    "': the NCCL communicator needs contiguous tensors; call .contiguous() first.");
  }
}

// Runs `launch` on the NCCL stream after the compute stream's pending work, and returns the pending Work.
template <class F>
WorkPtr Enqueue(NcclCommunicator::Impl* impl, const char* op, int64_t bytes, std::vector<torch::Tensor> keep,
                F launch) {
  if (impl->aborted) throw CommError("NCCL communicator '" + impl->name + "' was aborted; no further collectives");
  LCL_CUDA_CHECK(cudaSetDevice(impl->device));
  const uint64_t seq = impl->seq++;
  // An event, not a host sync: the NCCL stream waits for the producer kernels, the host goes on.
  cudaEvent_t ready = nullptr, done = nullptr;
  LCL_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
  LCL_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
  LCL_CUDA_CHECK(cudaEventRecord(ready, ComputeStream(impl->device)));
  LCL_CUDA_CHECK(cudaStreamWaitEvent(impl->stream, ready, 0));
  cudaEventDestroy(ready);  // safe: destruction is deferred until the event completes
  const uint64_t token = impl->watchdog ? impl->watchdog->Begin(impl->name, op, seq, bytes) : 0;
  launch();
  LCL_CUDA_CHECK(cudaEventRecord(done, impl->stream));
  VLOG(2) << "[" << impl->name << "] nccl " << op << " seq=" << seq << " bytes=" << bytes;
  return std::make_unique<NcclWork>(impl, done, std::move(keep), op, seq, token);
}

}  // namespace

NcclCommunicator::NcclCommunicator(MPI_Comm comm, std::string name, int device, Watchdog* watchdog,
                                   std::chrono::milliseconds timeout)
    : impl_(std::make_unique<Impl>()) {
  impl_->name = std::move(name);
  impl_->device = device;
  impl_->watchdog = watchdog;
  impl_->timeout = timeout;
  LCL_MPI_CHECK(MPI_Comm_rank(comm, &impl_->rank));
  LCL_MPI_CHECK(MPI_Comm_size(comm, &impl_->size));
  LCL_CUDA_CHECK(cudaSetDevice(device));
  ncclUniqueId id;
  if (impl_->rank == 0) LCL_NCCL_CHECK(ncclGetUniqueId(&id), nullptr);
  LCL_MPI_CHECK(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, comm));
  LCL_NCCL_CHECK(ncclCommInitRank(&impl_->comm, impl_->size, id, impl_->rank), nullptr);
  LCL_CUDA_CHECK(cudaStreamCreateWithFlags(&impl_->stream, cudaStreamNonBlocking));
  LCL_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&impl_->scratch), sizeof(float)));
}

NcclCommunicator::~NcclCommunicator() {
  if (!impl_) return;
  cudaSetDevice(impl_->device);
  if (impl_->comm) {
    // A healthy communicator is destroyed (flushes pending work); an aborted one was already torn down.
    if (!impl_->aborted) ncclCommDestroy(impl_->comm);
  }
  if (impl_->scratch) cudaFree(impl_->scratch);
  if (impl_->stream) cudaStreamDestroy(impl_->stream);
}

bool NcclCommunicator::Built() { return true; }
std::string NcclCommunicator::Version() { return NcclVersionString(); }
int NcclCommunicator::rank() const { return impl_->rank; }
int NcclCommunicator::size() const { return impl_->size; }
const std::string& NcclCommunicator::name() const { return impl_->name; }

void NcclCommunicator::Abort() {
  if (impl_->comm && !impl_->aborted) ncclCommAbort(impl_->comm);
  impl_->aborted = true;
}

WorkPtr NcclCommunicator::AllReduceAsync(torch::Tensor& tensor, ReduceOp op) {
  CheckCuda(tensor, "AllReduce", impl_->name, impl_->device);
  const ncclDataType_t type = NcclType(tensor.scalar_type(), "AllReduce");
  Impl* impl = impl_.get();
  return Enqueue(impl, "AllReduce", tensor.nbytes(), {tensor}, [&] {
    LCL_NCCL_CHECK(ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), tensor.numel(), type, NcclOp(op),
                                 impl->comm, impl->stream),
                   impl->comm);
  });
}

WorkPtr NcclCommunicator::ReduceScatterAsync(const torch::Tensor& input, torch::Tensor& output, ReduceOp op) {
  CheckCuda(input, "ReduceScatter", impl_->name, impl_->device);
  CheckCuda(output, "ReduceScatter", impl_->name, impl_->device);
  if (input.scalar_type() != output.scalar_type() || input.numel() != output.numel() * impl_->size) {
    throw CommError("ReduceScatter on '" + impl_->name +
                    "': input must have size() x output elements of the same dtype");
  }
  const ncclDataType_t type = NcclType(input.scalar_type(), "ReduceScatter");
  Impl* impl = impl_.get();
  return Enqueue(impl, "ReduceScatter", input.nbytes(), {input, output}, [&] {
    LCL_NCCL_CHECK(ncclReduceScatter(input.data_ptr(), output.data_ptr(), output.numel(), type, NcclOp(op),
                                     impl->comm, impl->stream),
                   impl->comm);
  });
}

WorkPtr NcclCommunicator::AllGatherAsync(const torch::Tensor& input, torch::Tensor& output) {
  CheckCuda(input, "AllGather", impl_->name, impl_->device);
  CheckCuda(output, "AllGather", impl_->name, impl_->device);
  if (input.scalar_type() != output.scalar_type() || output.numel() != input.numel() * impl_->size) {
    throw CommError("AllGather on '" + impl_->name +
                    "': output must have size() x input elements of the same dtype");
  }
  const ncclDataType_t type = NcclType(input.scalar_type(), "AllGather");
  Impl* impl = impl_.get();
  return Enqueue(impl, "AllGather", output.nbytes(), {input, output}, [&] {
    LCL_NCCL_CHECK(ncclAllGather(input.data_ptr(), output.data_ptr(), input.numel(), type, impl->comm,
                                 impl->stream),
                   impl->comm);
  });
}

WorkPtr NcclCommunicator::BroadcastAsync(torch::Tensor& tensor, int root) {
  CheckCuda(tensor, "Broadcast", impl_->name, impl_->device);
  if (root < 0 || root >= impl_->size) {
    throw CommError("Broadcast on '" + impl_->name + "': root " + std::to_string(root) + " out of range");
  }
  const ncclDataType_t type = NcclType(tensor.scalar_type(), "Broadcast");
  Impl* impl = impl_.get();
  return Enqueue(impl, "Broadcast", tensor.nbytes(), {tensor}, [&] {
    LCL_NCCL_CHECK(ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(), tensor.numel(), type, root, impl->comm,
                                 impl->stream),
                   impl->comm);
  });
}

void NcclCommunicator::AllReduce(torch::Tensor& tensor, ReduceOp op) { AllReduceAsync(tensor, op)->Wait(); }
void NcclCommunicator::ReduceScatter(const torch::Tensor& input, torch::Tensor& output, ReduceOp op) {
  ReduceScatterAsync(input, output, op)->Wait();
}
void NcclCommunicator::AllGather(const torch::Tensor& input, torch::Tensor& output) {
  AllGatherAsync(input, output)->Wait();
}
void NcclCommunicator::Broadcast(torch::Tensor& tensor, int root) { BroadcastAsync(tensor, root)->Wait(); }

void NcclCommunicator::Barrier() {
  Impl* impl = impl_.get();
  Enqueue(impl, "Barrier", sizeof(float), {}, [&] {
    LCL_NCCL_CHECK(ncclAllReduce(impl->scratch, impl->scratch, 1, ncclFloat32, ncclSum, impl->comm, impl->stream),
                   impl->comm);
  })->Wait();
}

}  // namespace lcl::cluster
