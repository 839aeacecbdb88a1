// ZeRO-1 AdamW against plain references on 2 and 4 ranks: a DP step equals one process's step on the whole batch
// with torch::optim::AdamW and clip_grad_norm_ (ZeRO-1 on and off); ZeRO-1 on equals off; bf16 parameters keep fp32
// masters that follow an fp32 run exactly; bad parameters and options are ConfigErrors.
#include "optim/optimizer.h"

#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <limits>

#include "cluster/errors.h"
#include "cluster/mpi_communicator.h"
#include "tests/optim/optim_fixtures.h"

namespace lcl::optim {
namespace {

using cluster::MpiCommunicator;
using testing::ExpectParamsClose;
using testing::GlobalBatch;
using testing::GlobalGrad;
using testing::GlobalInit;
using testing::kBatch;
using testing::kMlpNames;
using testing::kSpecs;
using testing::MakeMlp;
using testing::MlpLoss;
using testing::MlpOptions;
using testing::RunDp;
using testing::RunReference;
using testing::RunResult;
using testing::TpOptions;
using testing::TpParams;
using testing::Trainable;

class DataParallel : public ::testing::TestWithParam<bool> {};

TEST_P(DataParallel, StepEqualsOneProcessStepOnTheWholeBatchWithTorchAdamW) {
  MpiCommunicator dp(MPI_COMM_WORLD, "dp");
  OptimizerOptions o = MlpOptions();
  o.zero1 = GetParam();
  const int steps = 4;
  RunResult ref = RunReference(o, steps);
  RunResult got = RunDp(o, steps, /*micro=*/2, &dp);
  int clipped = 0;
  for (int s = 0; s < steps; ++s) {
    EXPECT_NEAR(got.stats[s].grad_norm, ref.stats[s].grad_norm, 1e-5 * ref.stats[s].grad_norm) << "step " << s;
    EXPECT_EQ(got.stats[s].clipped, ref.stats[s].clipped) << "step " << s;
    clipped += got.stats[s].clipped;
  }
  EXPECT_GT(clipped, 0) << "the test should exercise clipping";
  EXPECT_LT(clipped, steps) << "and an unclipped step: norms " << ref.stats[0].grad_norm << " "
                            << ref.stats[1].grad_norm << " " << ref.stats[2].grad_norm << " " << ref.stats[3].grad_norm;
  ExpectParamsClose(got, ref, 1e-5, 1e-6);
}

INSTANTIATE_TEST_SUITE_P(ZeroOneOnAndOff, DataParallel, ::testing::Bool());

// The fused multi-tensor AdamW (the default) against LibTorch's torch::optim::AdamW on one process over the whole
// batch, and against lcl's own one-tensor-at-a-time path: within 1e-6 after several clipped and unclipped steps,
// with weight decay on the weights only.
TEST(DistributedOptimizer, FusedAdamWEqualsTorchAdamWAndThePerTensorPathWithin1e6) {
  MpiCommunicator dp(MPI_COMM_WORLD, "dp");
  OptimizerOptions fused = MlpOptions(), plain = MlpOptions();
  ASSERT_TRUE(fused.fused);
  ASSERT_GT(fused.weight_decay, 0.0) << "the test should exercise weight decay";
  plain.fused = false;
  const int steps = 5;
  RunResult a = RunDp(fused, steps, 1, &dp);
  RunResult b = RunDp(plain, steps, 1, &dp);
  RunResult ref = RunReference(fused, steps);
  ExpectParamsClose(a, b, 0, 1e-6);
  ExpectParamsClose(a, ref, 0, 1e-6);
  // The parameters did move, so the equality is not that of untouched weights.
  RunResult start = RunDp(fused, 0, 1, &dp);
  double moved = 0;
  for (size_t i = 0; i < a.params.size(); ++i) {
    moved = std::max(moved, (a.params[i] - start.params[i]).abs().max().item<double>());
  }
  EXPECT_GT(moved, 1e-3);
}

// The finite check is on the device: a non-finite guard (the step's loss) or gradient skips the update inside the
// step, fused or not, ZeRO-1 or not. Parameters, moments and the step count stay as they were, and the next finite
// step is the same as if the skipped one had never been asked for.
TEST(DistributedOptimizer, NonFiniteLossOrGradientSkipsTheUpdateAndLeavesEverythingAsItWas) {
  MpiCommunicator dp(MPI_COMM_WORLD, "dp");
  for (const bool fused : {true, false}) {
    for (const bool zero1 : {true, false}) {
      for (const std::string bad : {"loss", "grad"}) {
        const std::string what = std::string(fused ? "fused" : "per-tensor") + (zero1 ? " zero1 " : " ") + bad;
        OptimizerOptions o = MlpOptions();
        o.fused = fused;
        o.zero1 = zero1;
        std::vector<torch::Tensor> p = MakeMlp();
        DistributedOptimizer opt(Trainable(p, kMlpNames), &dp, nullptr, o);
        auto step = [&](int s, double poison) {
          auto [x, y] = GlobalBatch(s);
          const int64_t per = kBatch / dp.size();
          opt.ZeroGrad();
          opt.PrepareBackward(true);
          torch::Tensor loss = MlpLoss(p, x.narrow(0, dp.rank() * per, per), y.narrow(0, dp.rank() * per, per));
          if (bad == "grad" && poison != 0) loss = loss * poison;  // an infinite gradient, on one rank only
          loss.backward();
          const torch::Tensor guard = bad == "loss" && poison != 0 ? torch::full({}, poison) : loss.detach();
          return opt.Step(1e-2, guard);
        };
        EXPECT_FALSE(step(0, 0).skipped) << what;
        std::vector<torch::Tensor> before;
        for (const torch::Tensor& t : p) before.push_back(t.detach().clone());
        const torch::Tensor avg_before = opt.exp_avg(kMlpNames[0]).clone();
        const double poison = dp.rank() == 0 ? std::numeric_limits<double>::infinity() : 1.0;
        const StepStats skipped = step(1, bad == "loss" ? std::nan("") : poison);
        EXPECT_TRUE(skipped.skipped) << what;
        EXPECT_EQ(opt.step(), 1) << what;
        for (size_t i = 0; i < p.size(); ++i)
          EXPECT_TRUE(p[i].detach().equal(before[i])) << what << " " << kMlpNames[i];
        EXPECT_TRUE(opt.exp_avg(kMlpNames[0]).equal(avg_before)) << what;
        EXPECT_FALSE(step(1, 0).skipped) << what;
        EXPECT_EQ(opt.step(), 2) << what;
      }
    }
  }
}

TEST(DistributedOptimizer, ZeroOneMatchesReplicatedAdamWInParamsAndState) {
  MpiCommunicator dp(MPI_COMM_WORLD, "dp");
  OptimizerOptions on = MlpOptions(), off = MlpOptions();
  off.zero1 = false;
  RunResult a = RunDp(on, 3, 1, &dp);
  RunResult b = RunDp(off, 3, 1, &dp);
  for (int s = 0; s < 3; ++s) EXPECT_NEAR(a.stats[s].grad_norm, b.stats[s].grad_norm, 1e-6 * b.stats[s].grad_norm);
  ExpectParamsClose(a, b, 1e-6, 1e-7);
}

TEST(DistributedOptimizer, Bf16ParamsKeepFp32MastersThatFollowTheFp32RunExactly) {
  // bf16 parameters and gradients (CPU here; the GPU path is the same code): the gradients are
  // reduced in fp32 and AdamW runs on fp32 masters, so from bf16-representable start values and
  // gradients the masters equal an fp32 run bit for bit, and the parameters are those masters
  // rounded to bf16.
  MpiCommunicator dp(MPI_COMM_WORLD, "dp");
  for (bool zero1 : {true, false}) {
    std::vector<TrainableParam> p32 = TpParams(0, 1, /*sharded=*/false), p16 = TpParams(0, 1, false);
    for (size_t i = 0; i < kSpecs.size(); ++i) {
      torch::Tensor start = GlobalInit(i).to(torch::kBFloat16);
      p16[i].param = start.clone().requires_grad_();
      p32[i].param = start.to(torch::kFloat32).requires_grad_();
    }
    DistributedOptimizer o32(p32, &dp, nullptr, TpOptions(zero1)), o16(p16, &dp, nullptr, TpOptions(zero1));
    for (int s = 0; s < 3; ++s) {
      for (size_t i = 0; i < kSpecs.size(); ++i) {
        torch::Tensor g = GlobalGrad(i, dp.rank(), s).to(torch::kBFloat16);
        p16[i].param.mutable_grad() = g;
        p32[i].param.mutable_grad() = g.to(torch::kFloat32);
      }
      StepStats a = o32.Step(0.05), b = o16.Step(0.05);
      EXPECT_EQ(a.grad_norm, b.grad_norm);
    }
    for (size_t i = 0; i < kSpecs.size(); ++i) {
      const std::string& n = kSpecs[i].name;
      EXPECT_EQ(o16.master(n).scalar_type(), torch::kFloat32);
      EXPECT_TRUE(o16.master(n).equal(o32.master(n))) << n;
      EXPECT_TRUE(o16.exp_avg_sq(n).equal(o32.exp_avg_sq(n))) << n;
      EXPECT_EQ(p16[i].param.scalar_type(), torch::kBFloat16);
      EXPECT_TRUE(p16[i].param.equal(p32[i].param.to(torch::kBFloat16))) << n;
    }
    for (const checkpoint::LocalShard& sh : o16.StateShards()) EXPECT_EQ(sh.data.scalar_type(), torch::kFloat32);
  }
}

TEST(DistributedOptimizer, BadParametersAndOptionsAreConfigErrors) {
  MpiCommunicator dp(MPI_COMM_WORLD, "dp");
  EXPECT_THROW(DistributedOptimizer({}, &dp, nullptr, {}), ConfigError);
  std::vector<torch::Tensor> p = MakeMlp();
  {
    std::vector<TrainableParam> mixed = Trainable(p, kMlpNames);
    mixed[1].param = torch::zeros({16}, torch::kFloat64).requires_grad_();
    EXPECT_THROW(DistributedOptimizer(mixed, &dp, nullptr, {}), ConfigError);
    mixed[1].param = torch::zeros({16}, torch::kBFloat16).requires_grad_();
    try {
      DistributedOptimizer opt(mixed, &dp, nullptr, {});
      ADD_FAILURE() << "mixed dtypes accepted";
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("fc1.bias"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("share dtype"), std::string::npos) << e.what();
    }
  }
  {
    std::vector<TrainableParam> bad = Trainable(p, kMlpNames);
    bad[0].param = p[0] * 2;  // not a leaf
    EXPECT_THROW(DistributedOptimizer(bad, &dp, nullptr, {}), ConfigError);
  }
  {
    std::vector<TrainableParam> bad = Trainable(p, kMlpNames);
    bad[2].global_shape = {10, 16};  // replicated but the local tensor is [5, 16]
    EXPECT_THROW(DistributedOptimizer(bad, &dp, nullptr, {}), ConfigError);
  }
  {
    std::vector<TrainableParam> bad = Trainable(p, kMlpNames);
    bad[3].name = bad[1].name;
    EXPECT_THROW(DistributedOptimizer(bad, &dp, nullptr, {}), ConfigError);
  }
  OptimizerOptions o;
  o.beta2 = 1.0;
  EXPECT_THROW(DistributedOptimizer(Trainable(p, kMlpNames), &dp, nullptr, o), ConfigError);
  EXPECT_THROW(DistributedOptimizer(Trainable(p, kMlpNames), nullptr, nullptr, {}), ConfigError);
}

}  // namespace
}  // namespace lcl::optim
