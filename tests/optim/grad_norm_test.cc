// The global gradient norm and clipping over TP and DP: the grad norm and clipped AdamW over TP-sharded (dim 0 and
// dim 1) and replicated parameters at dp x tp = 1x2 / 2x2 equal a serial fp64 reference, and the tiny multimodal
// model, placed as its TP layers declare, trains at dp x tp = 1x2 / 2x2 as one process does.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>

#include "cluster/mpi_communicator.h"
#include "cluster/process_grid.h"
#include "model/multimodal_model.h"
#include "model/tp_layers.h"
#include "optim/optimizer.h"
#include "tests/model/test_configs.h"
#include "tests/optim/optim_fixtures.h"

namespace lcl::optim {
namespace {

using cluster::MpiCommunicator;
using testing::GlobalGrad;
using testing::GlobalInit;
using testing::kSpecs;
using testing::LocalOf;
using testing::SetTpGrads;
using testing::TpOptions;
using testing::TpParams;

class TensorAndDataParallel : public ::testing::TestWithParam<bool> {};

TEST_P(TensorAndDataParallel, GradNormAndClippedAdamWEqualASerialFp64Reference) {
  cluster::ProcessGrid grid(MPI_COMM_WORLD, /*tp=*/2);  // 1x2 on 2 ranks, 2x2 on 4
  MpiCommunicator dp(grid.dp_comm(), "dp"), tp(grid.tp_comm(), "tp");
  const OptimizerOptions o = TpOptions(GetParam());
  std::vector<TrainableParam> params = TpParams(tp.rank(), tp.size());
  std::vector<torch::Tensor> local;
  for (auto& p : params) local.push_back(p.param);
  DistributedOptimizer opt(params, &dp, &tp, o);

  // Serial fp64 reference over the global tensors: SUM over DP ranks, norm, clip, AdamW.
  std::vector<torch::Tensor> ref, m, v;
  for (size_t i = 0; i < kSpecs.size(); ++i) {
    ref.push_back(GlobalInit(i).to(torch::kFloat64));
    m.push_back(torch::zeros_like(ref.back()));
    v.push_back(torch::zeros_like(ref.back()));
  }
  for (int s = 0; s < 3; ++s) {
    const double lr = 0.05;
    SetTpGrads(params, dp.rank(), tp.rank(), tp.size(), s);
    opt.PrepareBackward(true);
    StepStats st = opt.Step(lr);

    std::vector<torch::Tensor> g;
    double sq = 0;
    for (size_t i = 0; i < kSpecs.size(); ++i) {
      g.push_back(torch::zeros_like(ref[i]));
      for (int d = 0; d < dp.size(); ++d) g[i] += GlobalGrad(i, d, s).to(torch::kFloat64);
      sq += g[i].square().sum().item<double>();
    }
    const double norm = std::sqrt(sq), coef = std::min(1.0, o.clip_norm / (norm + 1e-6));
    EXPECT_NEAR(st.grad_norm, norm, 1e-6 * norm) << "step " << s;
    EXPECT_TRUE(st.clipped);
    const double b1 = 1 - std::pow(o.beta1, s + 1), b2 = 1 - std::pow(o.beta2, s + 1);
    for (size_t i = 0; i < kSpecs.size(); ++i) {
      torch::Tensor gc = g[i] * coef;
      if (ref[i].dim() >= 2) ref[i] *= 1 - lr * o.weight_decay;
      m[i] = o.beta1 * m[i] + (1 - o.beta1) * gc;
      v[i] = o.beta2 * v[i] + (1 - o.beta2) * gc * gc;
      ref[i] -= lr / b1 * m[i] / ((v[i] / b2).sqrt() + o.eps);
      torch::Tensor want = LocalOf(ref[i], i, tp.rank(), tp.size()).to(torch::kFloat32);
      EXPECT_TRUE(torch::allclose(local[i], want, 1e-5, 1e-6))
          << kSpecs[i].name << " step " << s << " max diff " << (local[i] - want).abs().max().item<double>();
    }
  }
}

INSTANTIATE_TEST_SUITE_P(ZeroOneOnAndOff, TensorAndDataParallel, ::testing::Bool());

// ---- The tiny multimodal model: dp x tp = 1x2 / 2x2 against one process with the whole batch. ----

// The trainable parameters where their TP layers declare them (the frozen vision tower left out).
std::vector<TrainableParam> ModelParams(lcl::model::MultimodalModelImpl& model) {
  std::vector<TrainableParam> out;
  for (lcl::model::ParamPlacement& where : lcl::model::TpPlacements(model)) {
    if (!where.param.requires_grad()) continue;
    const bool decay = where.param.dim() >= 2;
    out.push_back(TrainableParam{where.name, where.param, where.split.dim, std::move(where.global_shape),
                                 std::move(where.offsets), decay});
  }
  return out;
}

TEST(DistributedOptimizer, TinyMultimodalModelTrainedWithTpAndDpMatchesOneProcess) {
  cluster::ProcessGrid grid(MPI_COMM_WORLD, /*tp=*/2);
  MpiCommunicator dp(grid.dp_comm(), "dp"), tp(grid.tp_comm(), "tp"), self(MPI_COMM_SELF, "self");
  const lcl::model::ModelConfig c = lcl::model::testing::TestConfig(/*kv_heads=*/2);
  torch::manual_seed(41);
  lcl::model::MultimodalModel full(c, lcl::model::TpGroup{});
  lcl::model::MultimodalModel sharded(c, lcl::model::TpGroup{&tp});
  {
    // The same weights (the frozen tower's too), each rank's slice where its layer declares it.
    torch::NoGradGuard no_grad;
    auto want = full->named_parameters();
    for (const lcl::model::ParamPlacement& where : lcl::model::TpPlacements(*sharded)) {
      torch::Tensor src = want[where.name];
      ASSERT_EQ(src.sizes().vec(), where.global_shape) << where.name;
      const int d = where.split.dim;
      if (d >= 0) src = src.narrow(d, where.offsets[d], where.param.size(d));
      where.param.copy_(src);
    }
  }
  std::vector<TrainableParam> full_params = ModelParams(*full);
  std::vector<TrainableParam> params = ModelParams(*sharded);
  ASSERT_EQ(params.size(), full_params.size());
  OptimizerOptions o;
  o.weight_decay = 0.05;
  o.eps = 1e-6;  // Adam's first steps move by ~lr * sign(g): keep gradients at rounding-noise level from flipping it
  o.zero1 = false;
  o.bucket_bytes = 4096;
  DistributedOptimizer serial(full_params, &self, nullptr, o);
  o.zero1 = true;
  DistributedOptimizer parallel(params, &dp, &tp, o);

  const int64_t per = 2, batch = per * dp.size(), im = c.image_token_id;
  for (int s = 0; s < 2; ++s) {
    torch::manual_seed(60 + s);  // the same global batch on every rank
    torch::Tensor ids = torch::randint(0, 60, {batch, 10});
    ids.narrow(1, 2, 4).fill_(im);  // one image (4 patches) per sequence
    torch::Tensor labels = ids.masked_fill(ids.eq(im), -100);
    torch::Tensor images = torch::randn({batch, 3, 16, 16});
    serial.ZeroGrad();
    serial.PrepareBackward(true);
    full->forward(lcl::model::MultimodalBatch{ids, {}, {}, labels, images, {}, false, {}, {}}).loss_sum.backward();
    const StepStats want = serial.Step(1e-2);
    parallel.ZeroGrad();
    parallel.PrepareBackward(true);
    const int64_t at = dp.rank() * per;
    sharded
        ->forward(lcl::model::MultimodalBatch{
            ids.narrow(0, at, per), {}, {}, labels.narrow(0, at, per), images.narrow(0, at, per), {}, false, {}, {}})
        .loss_sum.backward();
    const StepStats got = parallel.Step(1e-2);
    EXPECT_NEAR(got.grad_norm, want.grad_norm, 1e-4 * want.grad_norm) << "step " << s;
    EXPECT_EQ(got.clipped, want.clipped);
  }
  for (size_t i = 0; i < params.size(); ++i) {
    torch::Tensor want = full_params[i].param;
    const int d = params[i].tp_split_dim;
    if (d >= 0) want = want.narrow(d, params[i].tp_offsets[d], params[i].param.size(d));
    EXPECT_TRUE(torch::allclose(params[i].param, want, 1e-4, 1e-5))
        << params[i].name << " max diff " << (params[i].param - want).abs().max().item<double>();
  }
}

}  // namespace
}  // namespace lcl::optim
