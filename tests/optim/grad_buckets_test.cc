// The bucketed DP gradient reduction (optim/grad_buckets.h) on 2 and 4 ranks: reducing each bucket as backward
// produces it is bitwise equal to reducing everything at Step (ZeRO-1 on and off), and parameters unused in the
// last backward neither hang the reduction nor lose the gradients of earlier micro-steps.
#include "optim/grad_buckets.h"

#include <gtest/gtest.h>
#include <mpi.h>

#include <atomic>
#include <cmath>

#include "cluster/mpi_communicator.h"
#include "optim/optimizer.h"
#include "tests/optim/optim_fixtures.h"

namespace lcl::optim {
namespace {

using cluster::MpiCommunicator;
using testing::GlobalBatch;
using testing::kBatch;
using testing::kMlpNames;
using testing::MakeMlp;
using testing::MlpLoss;
using testing::MlpOptions;
using testing::RunDp;
using testing::RunResult;
using testing::Trainable;

TEST(DistributedOptimizer, OverlappedReductionIsBitwiseEqualToReducingAtStep) {
  MpiCommunicator dp(MPI_COMM_WORLD, "dp");
  for (bool zero1 : {true, false}) {
    OptimizerOptions with = MlpOptions(), without = MlpOptions(), unpolled = MlpOptions();
    with.zero1 = without.zero1 = unpolled.zero1 = zero1;
    without.overlap = false;
    unpolled.poll_in_backward = false;
    RunResult a = RunDp(with, 3, 2, &dp);
    RunResult b = RunDp(without, 3, 2, &dp);
    RunResult c = RunDp(unpolled, 3, 2, &dp);
    for (size_t i = 0; i < a.params.size(); ++i) EXPECT_TRUE(a.params[i].equal(b.params[i])) << kMlpNames[i];
    for (size_t i = 0; i < a.params.size(); ++i) EXPECT_TRUE(a.params[i].equal(c.params[i])) << kMlpNames[i];
    for (int s = 0; s < 3; ++s) {
      EXPECT_EQ(a.stats[s].grad_norm, b.stats[s].grad_norm);
      EXPECT_GT(a.stats[s].buckets, 1);
      // Every parameter is used, so every bucket went out during backward; none without overlap.
      EXPECT_EQ(a.stats[s].buckets_launched_in_backward, a.stats[s].buckets);
      EXPECT_EQ(b.stats[s].buckets_launched_in_backward, 0);
    }
  }
}

TEST(DistributedOptimizer, ParametersUnusedInTheLastBackwardDoNotHangAndKeepTheirGradients) {
  MpiCommunicator dp(MPI_COMM_WORLD, "dp");
  // `side` is used in the first micro-step on even ranks only; `idle` in no backward at all.
  // Registered first, they sit in the last bucket, which the hooks can never complete.
  auto run = [&](bool overlap) {
    std::vector<torch::Tensor> p = MakeMlp();
    torch::manual_seed(3);
    torch::Tensor side = (torch::randn({3, 5}) * 0.1).requires_grad_();
    torch::Tensor idle = torch::randn({2, 2}).requires_grad_();
    std::vector<torch::Tensor> all = {side, idle, p[0], p[1], p[2], p[3]};
    OptimizerOptions o = MlpOptions();
    o.overlap = overlap;
    DistributedOptimizer opt(Trainable(all, {"side", "idle", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}), &dp,
                             nullptr, o);
    std::vector<StepStats> stats;
    for (int s = 0; s < 3; ++s) {
      auto [x, y] = GlobalBatch(s);
      const int64_t per = kBatch / dp.size();
      opt.ZeroGrad();
      for (int m = 0; m < 2; ++m) {
        opt.PrepareBackward(m == 1);
        torch::Tensor xs = x.narrow(0, dp.rank() * per + m * per / 2, per / 2);
        torch::Tensor loss = MlpLoss(p, xs, y.narrow(0, dp.rank() * per + m * per / 2, per / 2));
        if (m == 0 && dp.rank() % 2 == 0) loss = loss + torch::mm(side, xs.narrow(1, 0, 5).t()).square().sum();
        loss.backward();
      }
      stats.push_back(opt.Step(1e-2));
    }
    all.push_back(torch::tensor(stats.back().grad_norm));
    return std::make_pair(all, stats);
  };
  auto [a, a_stats] = run(true);
  auto [b, b_stats] = run(false);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(a[i].equal(b[i])) << i;
  EXPECT_GT(a_stats.back().buckets_launched_in_backward, 0);
  EXPECT_LT(a_stats.back().buckets_launched_in_backward, a_stats.back().buckets);
  // `side` moved (its gradient from an earlier micro-step was reduced), `idle` only decayed (no
  // gradient).
  torch::manual_seed(3);
  torch::Tensor side0 = torch::randn({3, 5}) * 0.1, idle0 = torch::randn({2, 2});
  EXPECT_FALSE(torch::allclose(a[0], side0, 1e-3, 1e-4));
  EXPECT_TRUE(torch::allclose(a[1], idle0 * std::pow(1 - 1e-2 * 0.1, 3), 1e-6, 1e-7));
}

// The DP communicator, counting the tests (IsCompleted) made on its async collectives.
class CountingComm final : public cluster::Communicator {
 public:
  explicit CountingComm(cluster::Communicator* inner) : inner_(inner) {}
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  const char* backend() const override { return inner_->backend(); }
  const std::string& name() const override { return inner_->name(); }
  void AllReduce(torch::Tensor& t, cluster::ReduceOp op) override { inner_->AllReduce(t, op); }
  cluster::WorkPtr AllReduceAsync(torch::Tensor& t, cluster::ReduceOp op) override {
    return Wrap(inner_->AllReduceAsync(t, op));
  }
  void ReduceScatter(const torch::Tensor& in, torch::Tensor& out, cluster::ReduceOp op) override {
    inner_->ReduceScatter(in, out, op);
  }
  cluster::WorkPtr ReduceScatterAsync(const torch::Tensor& in, torch::Tensor& out, cluster::ReduceOp op) override {
    return Wrap(inner_->ReduceScatterAsync(in, out, op));
  }
  void AllGather(const torch::Tensor& in, torch::Tensor& out) override { inner_->AllGather(in, out); }
  cluster::WorkPtr AllGatherAsync(const torch::Tensor& in, torch::Tensor& out) override {
    return Wrap(inner_->AllGatherAsync(in, out));
  }
  void Broadcast(torch::Tensor& t, int root) override { inner_->Broadcast(t, root); }
  cluster::WorkPtr BroadcastAsync(torch::Tensor& t, int root) override { return Wrap(inner_->BroadcastAsync(t, root)); }
  void Barrier() override { inner_->Barrier(); }
  std::atomic<int> tests{0};  // the progress thread counts too

 private:
  class CountingWork final : public cluster::Work {
   public:
    CountingWork(cluster::WorkPtr inner, std::atomic<int>* tests) : inner_(std::move(inner)), tests_(tests) {}
    bool IsCompleted() override {
      ++*tests_;
      return inner_->IsCompleted();
    }
    void Wait() override { inner_->Wait(); }
    bool Wait(std::chrono::milliseconds timeout) override { return inner_->Wait(timeout); }

   private:
    cluster::WorkPtr inner_;
    std::atomic<int>* tests_;
  };
  cluster::WorkPtr Wrap(cluster::WorkPtr w) { return std::make_unique<CountingWork>(std::move(w), &tests); }
  cluster::Communicator* inner_;
};

// With poll_in_backward the gradient hooks (and a progress thread) test the buckets already launched, so MPI moves
// them during backward (at TP = 1 nothing else calls MPI there); without it nothing tests them before Finish().
// Either way the reduced gradients are the same bits.
TEST(GradBuckets, HooksTestLaunchedBucketsDuringBackwardOnlyWhenPolling) {
  MpiCommunicator mpi(MPI_COMM_WORLD, "dp");
  std::vector<torch::Tensor> reduced[2];
  for (const bool poll : {true, false}) {
    CountingComm dp(&mpi);
    std::vector<torch::Tensor> p = MakeMlp();
    std::vector<internal::ParamSlot> slots;
    for (size_t i = 0; i < p.size(); ++i) {
      internal::ParamSlot s;
      s.name = kMlpNames[i];
      s.param = p[i];
      s.rows = p[i].size(0);
      s.row_numel = p[i].numel() / s.rows;
      slots.push_back(s);
    }
    // A byte cap of 1: one bucket per parameter, so hooks fire after the first launch.
    internal::GradBuckets sync(slots, &dp, /*parts=*/1, /*bucket_bytes=*/1, poll);
    ASSERT_EQ(sync.buckets().size(), p.size());
    auto [x, y] = GlobalBatch(0);
    sync.Arm(/*overlap=*/true);
    MlpLoss(p, x, y).backward();
    const int tests_in_backward = dp.tests.load();
    EXPECT_EQ(sync.launched_in_backward(), int(p.size()));
    if (poll) {
      EXPECT_GE(tests_in_backward, 1) << "no hook tested a launched bucket";
      EXPECT_GE(sync.polls(), 1);
    } else {
      EXPECT_EQ(tests_in_backward, 0);
      EXPECT_EQ(sync.completed_in_backward(), 0);
    }
    sync.Finish();
    for (size_t i = 0; i < p.size(); ++i) reduced[poll ? 0 : 1].push_back(sync.ReducedRows(int(i)).clone());
  }
  for (size_t i = 0; i < reduced[0].size(); ++i) EXPECT_TRUE(reduced[0][i].equal(reduced[1][i])) << kMlpNames[i];
}

// Registered in an order far from backward's (here fc2 after fc1 reversed: the first bucket holds fc1, whose
// gradients come last), the first step launches (almost) every bucket only when backward ends; from the second step the
// buckets follow the order the gradients came in, and all but the last go out while backward still runs.
TEST(GradBuckets, BucketsFollowTheOrderTheFirstBackwardProducedTheGradientsIn) {
  MpiCommunicator dp(MPI_COMM_WORLD, "dp");
  std::vector<torch::Tensor> p = MakeMlp();          // fc1.weight, fc1.bias, fc2.weight, fc2.bias
  const std::vector<int> registered = {2, 3, 0, 1};  // fc2 first: reverse registration puts fc1 in bucket 0
  std::vector<internal::ParamSlot> slots;
  for (const int k : registered) {
    internal::ParamSlot s;
    s.name = kMlpNames[size_t(k)];
    s.param = p[size_t(k)];
    s.rows = p[size_t(k)].size(0);
    s.row_numel = p[size_t(k)].numel() / s.rows;
    slots.push_back(s);
  }
  internal::GradBuckets sync(slots, &dp, /*parts=*/dp.size(), /*bucket_bytes=*/1);
  auto slot_name = [&](int bucket) {
    return kMlpNames[size_t(registered[size_t(sync.buckets()[size_t(bucket)].slots[0])])];
  };
  EXPECT_EQ(slot_name(0).substr(0, 3), "fc1");
  std::vector<int> early;
  for (int step = 0; step < 3; ++step) {
    for (torch::Tensor& t : p) t.mutable_grad().reset();
    auto [x, y] = GlobalBatch(step);
    sync.Arm(/*overlap=*/true);
    MlpLoss(p, x, y).backward();
    early.push_back(sync.launched_early());
    sync.Finish();
  }
  EXPECT_LE(early[0], 1) << "step 1: fc1's buckets first, so at most one can go out before backward ends";
  EXPECT_EQ(early[1], 3) << "from step 2 every bucket but the last goes out during backward";
  EXPECT_EQ(early[2], 3);
  EXPECT_EQ(slot_name(0).substr(0, 3), "fc2");
  EXPECT_EQ(slot_name(3).substr(0, 3), "fc1");
}

}  // namespace
}  // namespace lcl::optim
