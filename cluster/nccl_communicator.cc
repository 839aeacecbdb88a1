// NcclCommunicator: NCCL collectives on a private stream, ordered after the compute stream with CUDA events.
#include "cluster/nccl_communicator.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <deque>
#include <sstream>
#include <thread>

#ifdef LCL_TORCH_HAS_CUDA
#include <c10/cuda/CUDAStream.h>
#endif

#include "cluster/check.h"
#include "cluster/errors.h"
#include "cluster/nccl_handles.h"
#include "cluster/log.h"

namespace lcl::cluster {
namespace {

using internal::NcclVersionString;

ncclDataType_t NcclType(torch::ScalarType t, const char* op) {
  switch (t) {
    case torch::kFloat:
      return ncclFloat32;
    case torch::kDouble:
      return ncclFloat64;
    case torch::kBFloat16:
      return ncclBfloat16;
    case torch::kHalf:
      return ncclFloat16;
    case torch::kInt:
      return ncclInt32;
    case torch::kLong:
      return ncclInt64;
    case torch::kByte:
      return ncclUint8;
    case torch::kChar:
      return ncclInt8;
    default:
      break;
  }
  std::ostringstream msg;
  msg << op << ": dtype " << t << " is not supported by the NCCL communicator";
  throw CommError(msg.str());
}

ncclRedOp_t NcclOp(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return ncclSum;
    case ReduceOp::kAvg:
      return ncclAvg;
    case ReduceOp::kMax:
      return ncclMax;
    case ReduceOp::kMin:
      return ncclMin;
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
  // The owners are destroyed in reverse order, all on `device`: the communicator first (its destroy flushes work
  // on `stream`), then the idle events, the scratch buffer and the stream.
  ~Impl() {
    if (comm.get() || scratch || stream) cudaSetDevice(device);
  }

  std::string name;
  int device = 0;
  int rank = 0;
  int size = 1;
  Watchdog* watchdog = nullptr;
  std::chrono::milliseconds timeout{600000};
  CudaStream stream;
  CudaBuffer scratch;    // [1] device float for Barrier
  CudaEventPool events;  // two per collective (ready, done), reused
  NcclComm comm;
  uint64_t seq = 0;
  // Blocking collectives in flight: the compute stream waits for them on the device (an event), the host does
  // not. Each is kept (with its tensors) until a later call sees it complete. Destroyed first (declared last).
  std::deque<WorkPtr> ordered;

  void CheckAsync() {
    ncclResult_t async = ncclSuccess;
    LCL_NCCL_CHECK(ncclCommGetAsyncError(comm.get(), &async), comm.get());
    if (async != ncclSuccess && async != ncclInProgress) {
      std::string why = ncclGetErrorString(async);
      comm.Abort();
      throw CommError("NCCL communicator '" + name + "' on rank " + std::to_string(rank) +
                      " reported an asynchronous error: " + why + " [NCCL " + NcclVersionString() +
                      "]; the communicator was aborted.");
    }
  }
};

namespace {

class NcclWork final : public Work {
 public:
  // Must not outlive the communicator: the done event goes back to its pool.
  NcclWork(NcclCommunicator::Impl* impl, CudaEventPool::Lease done, std::vector<torch::Tensor> keep, const char* op,
           uint64_t seq, uint64_t token)
      : impl_(impl), done_(std::move(done)), keep_(std::move(keep)), op_(op), seq_(seq), token_(token) {}
  ~NcclWork() override {
    // The tensors in keep_ must outlive the collective that reads and writes them.
    if (!finished_ && !impl_->comm.aborted()) cudaEventSynchronize(done_.get());
    Finish();
  }
  cudaEvent_t done_event() const { return done_.get(); }
  bool IsCompleted() override {
    if (finished_) return true;
    impl_->CheckAsync();
    cudaError_t q = cudaEventQuery(done_.get());
    if (q == cudaErrorNotReady) return false;
    if (q != cudaSuccess) internal::ThrowCudaError(q, "cudaEventQuery(done_.get())", __FILE__, __LINE__);
    Finish();
    return true;
  }
  void Wait() override {
    if (!Wait(impl_->timeout)) {
      impl_->comm.Abort();
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
  CudaEventPool::Lease done_;
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

// Runs `launch` on the NCCL stream after the compute stream's pending work, and returns the pending Work. Both
// events are leased from the pool: a launch that throws returns them and ends its watchdog entry.
template <class F>
WorkPtr Enqueue(NcclCommunicator::Impl* impl, const char* op, int64_t bytes, std::vector<torch::Tensor> keep,
                F launch) {
  if (impl->comm.aborted()) {
    throw CommError("NCCL communicator '" + impl->name + "' was aborted; no further collectives");
  }
  LCL_CUDA_CHECK(cudaSetDevice(impl->device));
  const uint64_t seq = impl->seq++;
  CudaEventPool::Lease done = impl->events.Acquire();
  {
    // An event, not a host sync: the NCCL stream waits for the producer kernels, the host goes on.
    CudaEventPool::Lease ready = impl->events.Acquire();
    LCL_CUDA_CHECK(cudaEventRecord(ready.get(), ComputeStream(impl->device)));
    LCL_CUDA_CHECK(cudaStreamWaitEvent(impl->stream.get(), ready.get(), 0));
  }  // `ready` may be recorded again at once: the wait is on the work it captured, not on later records
  // The probe lets the watchdog drop a collective that finished while nobody looked (a blocking one that only the
  // device waited for); the event outlives the record, since the Work ends the record before returning the event.
  cudaEvent_t done_event = done.get();
  const uint64_t token = impl->watchdog
                             ? impl->watchdog->Begin(impl->name, op, seq, bytes,
                                                     [done_event] { return cudaEventQuery(done_event) == cudaSuccess; })
                             : 0;
  try {
    launch();
    LCL_CUDA_CHECK(cudaEventRecord(done.get(), impl->stream.get()));
  } catch (...) {
    if (impl->watchdog) impl->watchdog->End(token);
    throw;
  }
  VLOG(2) << "[" << impl->name << "] nccl " << op << " seq=" << seq << " bytes=" << bytes;
  return std::make_unique<NcclWork>(impl, std::move(done), std::move(keep), op, seq, token);
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
  impl_->comm = NcclComm::InitRank(impl_->size, id, impl_->rank);
  // A throw from here on destroys the NCCL communicator with impl_ (a member, so destroyed even though this
  // constructor does not finish).
  impl_->stream = CreateCudaStream(cudaStreamNonBlocking);
  impl_->scratch = AllocateCudaBuffer(sizeof(float));
}

// Impl's owners release everything (a healthy communicator is destroyed, an aborted one was torn down already).
NcclCommunicator::~NcclCommunicator() = default;

bool NcclCommunicator::Built() { return true; }
std::string NcclCommunicator::Version() { return NcclVersionString(); }
int NcclCommunicator::rank() const { return impl_->rank; }
int NcclCommunicator::size() const { return impl_->size; }
const std::string& NcclCommunicator::name() const { return impl_->name; }

void NcclCommunicator::Abort() { impl_->comm.Abort(); }

WorkPtr NcclCommunicator::AllReduceAsync(torch::Tensor& tensor, ReduceOp op) {
  CheckCuda(tensor, "AllReduce", impl_->name, impl_->device);
  const ncclDataType_t type = NcclType(tensor.scalar_type(), "AllReduce");
  Impl* impl = impl_.get();
  return Enqueue(impl, "AllReduce", tensor.nbytes(), {tensor}, [&] {
    LCL_NCCL_CHECK(ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), tensor.numel(), type, NcclOp(op),
                                 impl->comm.get(), impl->stream.get()),
                   impl->comm.get());
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
                                     impl->comm.get(), impl->stream.get()),
                   impl->comm.get());
  });
}

WorkPtr NcclCommunicator::AllGatherAsync(const torch::Tensor& input, torch::Tensor& output) {
  CheckCuda(input, "AllGather", impl_->name, impl_->device);
  CheckCuda(output, "AllGather", impl_->name, impl_->device);
  if (input.scalar_type() != output.scalar_type() || output.numel() != input.numel() * impl_->size) {
    throw CommError("AllGather on '" + impl_->name + "': output must have size() x input elements of the same dtype");
  }
  const ncclDataType_t type = NcclType(input.scalar_type(), "AllGather");
  Impl* impl = impl_.get();
  return Enqueue(impl, "AllGather", output.nbytes(), {input, output}, [&] {
    LCL_NCCL_CHECK(
        ncclAllGather(input.data_ptr(), output.data_ptr(), input.numel(), type, impl->comm.get(), impl->stream.get()),
        impl->comm.get());
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
    LCL_NCCL_CHECK(ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(), tensor.numel(), type, root, impl->comm.get(),
                                 impl->stream.get()),
                   impl->comm.get());
  });
}

// Blocking collectives are blocking for the device, not the host: the compute stream waits for the collective's
// done event, so every later kernel (and any host read, which goes through the compute stream) sees the result,
// while the host goes on queueing work. Collectives seen complete are dropped from the front of the queue.
void NcclCommunicator::Order(WorkPtr work) {
  auto* nccl = static_cast<NcclWork*>(work.get());
  LCL_CUDA_CHECK(cudaStreamWaitEvent(ComputeStream(impl_->device), nccl->done_event(), 0));
  impl_->ordered.push_back(std::move(work));
  while (!impl_->ordered.empty() && impl_->ordered.front()->IsCompleted()) impl_->ordered.pop_front();
}

void NcclCommunicator::AllReduce(torch::Tensor& tensor, ReduceOp op) { Order(AllReduceAsync(tensor, op)); }
void NcclCommunicator::ReduceScatter(const torch::Tensor& input, torch::Tensor& output, ReduceOp op) {
  Order(ReduceScatterAsync(input, output, op));
}
void NcclCommunicator::AllGather(const torch::Tensor& input, torch::Tensor& output) {
  Order(AllGatherAsync(input, output));
}
void NcclCommunicator::Broadcast(torch::Tensor& tensor, int root) { Order(BroadcastAsync(tensor, root)); }

void NcclCommunicator::Barrier() {
  Impl* impl = impl_.get();
  Enqueue(impl, "Barrier", sizeof(float), {}, [&] {
    LCL_NCCL_CHECK(ncclAllReduce(impl->scratch.get(), impl->scratch.get(), 1, ncclFloat32, ncclSum, impl->comm.get(),
                                 impl->stream.get()),
                   impl->comm.get());
  })->Wait();
}

}  // namespace lcl::cluster
