// NcclCommunicator against the MPI reference (label gpu: needs one CUDA device per rank). On a machine without a
// GPU this test is excluded by label; run on one, a missing GPU is a failure, not a skip.
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include "cluster/mpi_communicator.h"
#include "cluster/errors.h"
#include "cluster/nccl_communicator.h"
#include "tests/test_main.h"

namespace lcl::cluster {
namespace {

class NcclTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(torch::cuda::is_available()) << "the gpu-labelled NCCL test needs CUDA devices";
    device_ = torch::Device(torch::kCUDA, lcl::testing::Mpi().local_rank() % torch::cuda::device_count());
    nccl_ = std::make_unique<NcclCommunicator>(MPI_COMM_WORLD, "world", device_.index());
    mpi_ = std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, "ref");
  }
  torch::Device device_{torch::kCPU};
  std::unique_ptr<NcclCommunicator> nccl_;
  std::unique_ptr<MpiCommunicator> mpi_;
};

TEST_F(NcclTest, AllReduceMatchesMpiForEveryDtypeAndOp) {
  const int rank = nccl_->rank();
  for (auto dt : {torch::kFloat, torch::kDouble, torch::kBFloat16, torch::kHalf, torch::kInt, torch::kLong}) {
    for (auto op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax, ReduceOp::kMin}) {
      if (op == ReduceOp::kAvg && c10::isIntegralType(dt, false)) continue;
      for (int64_t n : {0, 1, 17, 1 << 20}) {
        torch::manual_seed(rank * 7 + n);
        torch::Tensor cpu = (torch::randn({n}) * 10).to(dt);
        torch::Tensor gpu = cpu.to(device_);
        mpi_->AllReduce(cpu, op);
        nccl_->AllReduce(gpu, op);
        const double tol = dt == torch::kBFloat16 ? 2e-2 : dt == torch::kHalf ? 2e-3 : 1e-5;
        EXPECT_TRUE(torch::allclose(gpu.cpu().to(torch::kDouble), cpu.to(torch::kDouble), tol, tol))
            << dt << " " << ReduceOpName(op) << " n=" << n;
      }
    }
  }
}

TEST_F(NcclTest, ReduceScatterAllGatherAndBroadcastMatchMpi) {
  const int rank = nccl_->rank(), size = nccl_->size();
  torch::Tensor in = torch::arange(64 * size, torch::kFloat) * (rank + 1);
  torch::Tensor out_cpu = torch::empty({64});
  mpi_->ReduceScatter(in, out_cpu, ReduceOp::kSum);
  torch::Tensor out_gpu = torch::empty({64}, torch::TensorOptions().device(device_));
  nccl_->ReduceScatter(in.to(device_), out_gpu, ReduceOp::kSum);
  EXPECT_TRUE(out_gpu.cpu().equal(out_cpu));

  torch::Tensor piece = torch::full({5}, static_cast<float>(rank));
  torch::Tensor all_cpu = torch::empty({5 * size});
  mpi_->AllGather(piece, all_cpu);
  torch::Tensor all_gpu = torch::empty({5 * size}, torch::TensorOptions().device(device_));
  nccl_->AllGatherAsync(piece.to(device_), all_gpu)->Wait();
  EXPECT_TRUE(all_gpu.cpu().equal(all_cpu));

  torch::Tensor b =
      torch::full({9}, static_cast<double>(rank), torch::TensorOptions().device(device_).dtype(torch::kDouble));
  nccl_->Broadcast(b, size - 1);
  EXPECT_TRUE(b.cpu().eq(size - 1).all().item<bool>());
  nccl_->Barrier();
}

TEST_F(NcclTest, AbortedCommunicatorRefusesFurtherCollectives) {
  torch::Tensor t = torch::ones({4}, torch::TensorOptions().device(device_));
  nccl_->AllReduce(t, ReduceOp::kSum);
  EXPECT_TRUE(t.cpu().eq(nccl_->size()).all().item<bool>());
  nccl_->Abort();
  nccl_->Abort();  // idempotent
  try {
    nccl_->AllReduce(t, ReduceOp::kSum);
    FAIL() << "expected CommError";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("aborted"), std::string::npos) << e.what();
  }
  nccl_.reset();  // an aborted communicator is not destroyed a second time
}

TEST_F(NcclTest, CpuTensorIsAClearError) {
  torch::Tensor cpu = torch::ones({4});
  EXPECT_THROW(nccl_->AllReduce(cpu, ReduceOp::kSum), CommError);
}

}  // namespace
}  // namespace lcl::cluster
