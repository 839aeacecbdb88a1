// The bucketed DP gradient reduction (optim/grad_buckets.h) on 2 and 4 ranks: reducing each bucket as backward
// produces it is bitwise equal to reducing everything at Step (ZeRO-1 on and off), and parameters unused in the
// last backward neither hang the reduction nor lose the gradients of earlier micro-steps.
#include "optim/grad_buckets.h"

#include <gtest/gtest.h>
#include <mpi.h>

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
    OptimizerOptions with = MlpOptions(), without = MlpOptions();
    with.zero1 = without.zero1 = zero1;
    without.overlap = false;
    RunResult a = RunDp(with, 3, 2, &dp);
    RunResult b = RunDp(without, 3, 2, &dp);
    for (size_t i = 0; i < a.params.size(); ++i) EXPECT_TRUE(a.params[i].equal(b.params[i])) << kMlpNames[i];
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

}  // namespace
}  // namespace lcl::optim
