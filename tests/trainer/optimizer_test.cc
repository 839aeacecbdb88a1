// DistributedOptimizer on 2 and 4 ranks against references: a DP step equals one process's step on
// the whole batch with torch::optim::AdamW and clip_grad_norm_; ZeRO-1 on equals off; overlapped
// reduction is bitwise equal to reducing at Step; unused parameters do not hang; the grad norm and
// clipped AdamW over TP-sharded and replicated parameters (dp x tp = 1x2 / 2x2) equal a serial fp64
// reference; optimizer state saved through the Checkpointer loads into other layouts exactly (and a
// resumed run equals an uninterrupted one); bf16 parameters keep fp32 masters; the tiny multimodal
// model at dp x tp = 1x2 / 2x2 trains as one process does; bad input is a ConfigError.
#include "trainer/optimizer.h"

#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <filesystem>
#include <memory>

#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/checkpointer.h"
#include "cluster/control_plane.h"
#include "cluster/errors.h"
#include "cluster/mpi_communicator.h"
#include "cluster/process_grid.h"
#include "tests/model/test_configs.h"
#include "tests/test_main.h"
#include "trainer/hf_io.h"
#include "trainer/multimodal_model.h"

namespace lcl::trainer {
namespace {

namespace fs = std::filesystem;
using cluster::MpiCommunicator;

int Rank() { return lcl::testing::Mpi().rank(); }
int World() { return lcl::testing::Mpi().size(); }

// ---- A small MLP trained data-parallel: y = fc2(gelu(fc1(x))), loss = sum of squared errors
// (SUM-scaled). ----

constexpr int64_t kBatch = 8;  // global batch, split evenly over 2 or 4 ranks
const std::vector<std::string> kMlpNames = {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"};

std::vector<torch::Tensor> MakeMlp() {
  torch::manual_seed(7);
  // fc2 has 5 rows: uneven over 2 ranks and, over 4, leaves the last rank no rows of it.
  std::vector<torch::Tensor> p = {torch::randn({16, 8}) * 0.3, torch::randn({16}) * 0.1,
                                  torch::randn({5, 16}) * 0.3, torch::randn({5}) * 0.1};
  for (auto& t : p) t.requires_grad_();
  return p;
}

torch::Tensor MlpLoss(const std::vector<torch::Tensor>& p, const torch::Tensor& x,
                      const torch::Tensor& y) {
  torch::Tensor h = torch::gelu(torch::addmm(p[1], x, p[0].t()));  // [B, 16]
  torch::Tensor out = torch::addmm(p[3], h, p[2].t());             // [B, 5]
  return (out - y).square().sum();
}

std::pair<torch::Tensor, torch::Tensor> GlobalBatch(int step) {
  torch::manual_seed(100 + step);  // the same on every rank
  torch::Tensor x = torch::randn({kBatch, 8});
  return {x, torch::randn({kBatch, 5}) * 2};
}

std::vector<TrainableParam> Trainable(const std::vector<torch::Tensor>& p,
                                      const std::vector<std::string>& names) {
  std::vector<TrainableParam> out;
  for (size_t i = 0; i < p.size(); ++i) {
    std::vector<int64_t> shape = p[i].sizes().vec();
    out.push_back(TrainableParam{names[i], p[i], -1, shape, std::vector<int64_t>(shape.size(), 0),
                                 p[i].dim() >= 2});
  }
  return out;
}

OptimizerOptions MlpOptions() {
  OptimizerOptions o;
  o.weight_decay = 0.1;
  o.clip_norm =
      95.0;  // the reference norms are 107, 92, 90, 77: the first step clips, the others do not
  o.bucket_bytes = 256;  // several buckets
  return o;
}

double MlpLr(int step, int steps) { return LrAt(step, steps, 1e-2, 1e-3, 0.3); }

struct RunResult {
  std::vector<torch::Tensor> params;
  std::vector<StepStats> stats;
};

// Each rank trains on its slice of every global batch, in `micro` micro-steps.
RunResult RunDp(const OptimizerOptions& o, int steps, int micro, cluster::Communicator* dp) {
  std::vector<torch::Tensor> p = MakeMlp();
  DistributedOptimizer opt(Trainable(p, kMlpNames), dp, nullptr, o);
  RunResult r;
  const int64_t per_rank = kBatch / dp->size(), per_micro = per_rank / micro;
  for (int s = 0; s < steps; ++s) {
    auto [x, y] = GlobalBatch(s);
    opt.ZeroGrad();
    for (int m = 0; m < micro; ++m) {
      const int64_t at = dp->rank() * per_rank + m * per_micro;
      opt.PrepareBackward(m + 1 == micro);
      MlpLoss(p, x.narrow(0, at, per_micro), y.narrow(0, at, per_micro)).backward();
    }
    r.stats.push_back(opt.Step(MlpLr(s, steps)));
  }
  EXPECT_EQ(opt.step(), steps);
  r.params = p;
  return r;
}

// One process, the whole batch: clip_grad_norm_ and torch::optim::AdamW (decay only on the 2-D
// weights).
RunResult RunReference(const OptimizerOptions& o, int steps) {
  std::vector<torch::Tensor> p = MakeMlp();
  std::vector<torch::optim::OptimizerParamGroup> groups;
  auto adamw = [&](double wd) {
    return std::make_unique<torch::optim::AdamWOptions>(
        torch::optim::AdamWOptions(1e-3).betas({o.beta1, o.beta2}).eps(o.eps).weight_decay(wd));
  };
  groups.emplace_back(std::vector<torch::Tensor>{p[0], p[2]}, adamw(o.weight_decay));
  groups.emplace_back(std::vector<torch::Tensor>{p[1], p[3]}, adamw(0.0));
  torch::optim::AdamW ref(std::move(groups));
  RunResult r;
  for (int s = 0; s < steps; ++s) {
    auto [x, y] = GlobalBatch(s);
    ref.zero_grad();
    MlpLoss(p, x, y).backward();
    StepStats st;
    st.grad_norm = torch::nn::utils::clip_grad_norm_(p, o.clip_norm);
    st.clipped = o.clip_norm / (st.grad_norm + 1e-6) < 1.0;
    for (auto& g : ref.param_groups())
      static_cast<torch::optim::AdamWOptions&>(g.options()).lr(MlpLr(s, steps));
    ref.step();
    r.stats.push_back(st);
  }
  r.params = p;
  return r;
}

void ExpectParamsClose(const RunResult& a, const RunResult& b, double rtol, double atol) {
  for (size_t i = 0; i < a.params.size(); ++i) {
    EXPECT_TRUE(torch::allclose(a.params[i], b.params[i], rtol, atol))
        << kMlpNames[i] << " max diff " << (a.params[i] - b.params[i]).abs().max().item<double>();
  }
}

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
    EXPECT_NEAR(got.stats[s].grad_norm, ref.stats[s].grad_norm, 1e-5 * ref.stats[s].grad_norm)
        << "step " << s;
    EXPECT_EQ(got.stats[s].clipped, ref.stats[s].clipped) << "step " << s;
    clipped += got.stats[s].clipped;
  }
  EXPECT_GT(clipped, 0) << "the test should exercise clipping";
  EXPECT_LT(clipped, steps) << "and an unclipped step: norms " << ref.stats[0].grad_norm << " "
                            << ref.stats[1].grad_norm << " " << ref.stats[2].grad_norm << " "
                            << ref.stats[3].grad_norm;
  ExpectParamsClose(got, ref, 1e-5, 1e-6);
}

INSTANTIATE_TEST_SUITE_P(ZeroOneOnAndOff, DataParallel, ::testing::Bool());

TEST(DistributedOptimizer, ZeroOneMatchesReplicatedAdamWInParamsAndState) {
  MpiCommunicator dp(MPI_COMM_WORLD, "dp");
  OptimizerOptions on = MlpOptions(), off = MlpOptions();
  off.zero1 = false;
  RunResult a = RunDp(on, 3, 1, &dp);
  RunResult b = RunDp(off, 3, 1, &dp);
  for (int s = 0; s < 3; ++s)
    EXPECT_NEAR(a.stats[s].grad_norm, b.stats[s].grad_norm, 1e-6 * b.stats[s].grad_norm);
  ExpectParamsClose(a, b, 1e-6, 1e-7);
}

TEST(DistributedOptimizer, OverlappedReductionIsBitwiseEqualToReducingAtStep) {
  MpiCommunicator dp(MPI_COMM_WORLD, "dp");
  for (bool zero1 : {true, false}) {
    OptimizerOptions with = MlpOptions(), without = MlpOptions();
    with.zero1 = without.zero1 = zero1;
    without.overlap = false;
    RunResult a = RunDp(with, 3, 2, &dp);
    RunResult b = RunDp(without, 3, 2, &dp);
    for (size_t i = 0; i < a.params.size(); ++i)
      EXPECT_TRUE(a.params[i].equal(b.params[i])) << kMlpNames[i];
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
    DistributedOptimizer opt(
        Trainable(all, {"side", "idle", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}), &dp,
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
        if (m == 0 && dp.rank() % 2 == 0)
          loss = loss + torch::mm(side, xs.narrow(1, 0, 5).t()).square().sum();
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

// ---- Hand-built TP layouts: sharded along dim 0, along dim 1, and replicated parameters. ----

struct Spec {
  std::string name;
  std::vector<int64_t> global;
  int split;  // over TP
};
const std::vector<Spec> kSpecs = {{"col.weight", {8, 6}, 0},
                                  {"row.weight", {6, 8}, 1},
                                  {"norm.weight", {6}, -1},
                                  {"odd.weight", {5, 3}, -1}};

torch::Tensor GlobalInit(size_t i) {
  torch::manual_seed(50 + static_cast<int>(i));
  return torch::randn(kSpecs[i].global);
}
// The gradient DP rank `d` contributes at `step` (identical on the TP ranks for replicated
// parameters).
torch::Tensor GlobalGrad(size_t i, int d, int step) {
  torch::manual_seed(1000 * step + 10 * static_cast<int>(i) + d);
  return torch::randn(kSpecs[i].global);
}
torch::Tensor LocalOf(const torch::Tensor& global, size_t i, int tp_rank, int tp) {
  const int dim = kSpecs[i].split;
  if (dim < 0) return global;
  const int64_t len = kSpecs[i].global[dim] / tp;
  return global.narrow(dim, tp_rank * len, len);
}

std::vector<TrainableParam> TpParams(int tp_rank, int tp, bool sharded = true) {
  std::vector<TrainableParam> out;
  for (size_t i = 0; i < kSpecs.size(); ++i) {
    const int split = sharded ? kSpecs[i].split : -1;
    torch::Tensor local =
        (split < 0 ? GlobalInit(i) : LocalOf(GlobalInit(i), i, tp_rank, tp)).clone();
    std::vector<int64_t> offsets(kSpecs[i].global.size(), 0);
    if (split >= 0) offsets[split] = tp_rank * local.size(split);
    out.push_back(TrainableParam{kSpecs[i].name, local.requires_grad_(), split, kSpecs[i].global,
                                 offsets, local.dim() >= 2});
  }
  return out;
}

// Sets the gradients as DP rank `d` of a layout would have them (no backward: the sync packs them
// at Step).
void SetTpGrads(std::vector<TrainableParam>& params, int d, int tp_rank, int tp, int step) {
  for (size_t i = 0; i < params.size(); ++i) {
    torch::Tensor g = GlobalGrad(i, d, step);
    params[i].param.mutable_grad() =
        (params[i].tp_split_dim < 0 ? g : LocalOf(g, i, tp_rank, tp)).clone();
  }
}

OptimizerOptions TpOptions(bool zero1) {
  OptimizerOptions o;
  o.weight_decay = 0.1;
  o.eps = 0.5;  // large, so the update depends on the gradient's magnitude and clipping shows in
                // the result
  o.clip_norm = 2.0;
  o.zero1 = zero1;
  o.bucket_bytes = 100;
  return o;
}

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
          << kSpecs[i].name << " step " << s << " max diff "
          << (local[i] - want).abs().max().item<double>();
    }
  }
}

INSTANTIATE_TEST_SUITE_P(ZeroOneOnAndOff, TensorAndDataParallel, ::testing::Bool());

TEST(DistributedOptimizer, Bf16ParamsKeepFp32MastersThatFollowTheFp32RunExactly) {
  // bf16 parameters and gradients (CPU here; the GPU path is the same code): the gradients are
  // reduced in fp32 and AdamW runs on fp32 masters, so from bf16-representable start values and
  // gradients the masters equal an fp32 run bit for bit, and the parameters are those masters
  // rounded to bf16.
  MpiCommunicator dp(MPI_COMM_WORLD, "dp");
  for (bool zero1 : {true, false}) {
    std::vector<TrainableParam> p32 = TpParams(0, 1, /*sharded=*/false),
                                p16 = TpParams(0, 1, false);
    for (size_t i = 0; i < kSpecs.size(); ++i) {
      torch::Tensor start = GlobalInit(i).to(torch::kBFloat16);
      p16[i].param = start.clone().requires_grad_();
      p32[i].param = start.to(torch::kFloat32).requires_grad_();
    }
    DistributedOptimizer o32(p32, &dp, nullptr, TpOptions(zero1)),
        o16(p16, &dp, nullptr, TpOptions(zero1));
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
    for (const checkpoint::LocalShard& sh : o16.StateShards())
      EXPECT_EQ(sh.data.scalar_type(), torch::kFloat32);
  }
}

// ---- The tiny multimodal model: dp x tp = 1x2 / 2x2 against one process with the whole batch.
// ----

std::vector<TrainableParam> ModelParams(MultimodalModelImpl& model, int tp_rank, int tp) {
  std::vector<TrainableParam> out;
  for (auto& item : model.named_parameters()) {
    torch::Tensor p = item.value();
    if (!p.requires_grad()) continue;  // the frozen vision tower
    TrainableParam t{item.key(),
                     p,
                     TpSplitDim(HfTensorName(item.key())),
                     p.sizes().vec(),
                     std::vector<int64_t>(p.dim(), 0),
                     p.dim() >= 2};
    if (t.tp_split_dim >= 0) {
      t.global_shape[t.tp_split_dim] *= tp;
      t.tp_offsets[t.tp_split_dim] = tp_rank * p.size(t.tp_split_dim);
    }
    out.push_back(std::move(t));
  }
  return out;
}

TEST(DistributedOptimizer, TinyMultimodalModelTrainedWithTpAndDpMatchesOneProcess) {
  cluster::ProcessGrid grid(MPI_COMM_WORLD, /*tp=*/2);
  MpiCommunicator dp(grid.dp_comm(), "dp"), tp(grid.tp_comm(), "tp"), self(MPI_COMM_SELF, "self");
  const ModelConfig c = trainer::testing::TestConfig(/*kv_heads=*/2);
  torch::manual_seed(41);
  MultimodalModel full(c, TpGroup{});
  MultimodalModel sharded(c, TpGroup{&tp});
  {
    // The same weights (the frozen tower's too), TP-sliced as LoadHfCheckpoint slices them.
    torch::NoGradGuard no_grad;
    auto want = full->named_parameters();
    for (auto& item : sharded->named_parameters()) {
      torch::Tensor src = want[item.key()];
      const int d = TpSplitDim(HfTensorName(item.key()));
      if (d >= 0) src = src.narrow(d, tp.rank() * item.value().size(d), item.value().size(d));
      item.value().copy_(src);
    }
  }
  std::vector<TrainableParam> full_params = ModelParams(*full, 0, 1);
  std::vector<TrainableParam> params = ModelParams(*sharded, tp.rank(), tp.size());
  ASSERT_EQ(params.size(), full_params.size());
  OptimizerOptions o;
  o.weight_decay = 0.05;
  o.eps = 1e-6;  // Adam's first steps move by ~lr * sign(g): keep gradients at rounding-noise level
                 // from flipping it
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
    full->forward(MultimodalBatch{ids, {}, {}, labels, images}).loss_sum.backward();
    const StepStats want = serial.Step(1e-2);
    parallel.ZeroGrad();
    parallel.PrepareBackward(true);
    const int64_t at = dp.rank() * per;
    sharded
        ->forward(MultimodalBatch{
            ids.narrow(0, at, per), {}, {}, labels.narrow(0, at, per), images.narrow(0, at, per)})
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

// ---- Checkpoint round trip across layouts. ----

class OptimizerCheckpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    cluster::ControlPlane control(MPI_COMM_WORLD);
    run_ = control.BroadcastBytes(
        (fs::temp_directory_path() / ("lcl_optim_" + std::to_string(getpid()))).string());
    if (Rank() == 0) fs::remove_all(run_);
    MPI_Barrier(MPI_COMM_WORLD);
  }
  void TearDown() override {
    MPI_Barrier(MPI_COMM_WORLD);
    if (Rank() == 0) fs::remove_all(run_);
  }
  std::string run_;
};

TEST_F(OptimizerCheckpoint, StateSavedAtDp2WithZeroLoadsExactlyIntoDp1WithoutZeroAndBack) {
  // Saved by dp=2 with ZeRO-1 (tp=1 on 2 ranks, tp=2 on 4); every element of the state is stored
  // once (the Checkpointer's commit rejects shards that do not tile each tensor).
  const int tp_size = World() >= 4 ? 2 : 1;
  cluster::ProcessGrid grid(MPI_COMM_WORLD, tp_size);
  MpiCommunicator dp(grid.dp_comm(), "dp"), tp(grid.tp_comm(), "tp");
  ASSERT_EQ(dp.size(), 2);
  std::vector<TrainableParam> params = TpParams(tp.rank(), tp.size());
  DistributedOptimizer saved(params, &dp, &tp, TpOptions(/*zero1=*/true));
  for (int s = 0; s < 2; ++s) {
    SetTpGrads(params, dp.rank(), tp.rank(), tp.size(), s);
    saved.Step(0.05);
  }
  checkpoint::CheckpointState state;
  state.shards = saved.StateShards();
  state.optimizer_step = saved.step();
  {
    checkpoint::CheckpointOptions co;
    co.run_dir = run_;
    co.async = false;
    co.fail_on_error = true;
    checkpoint::Checkpointer ckpt(MPI_COMM_WORLD, co);
    ckpt.Save(saved.step(), state);
    ASSERT_TRUE(ckpt.Wait().committed) << ckpt.last().reason;
  }
  checkpoint::CheckpointReader reader(checkpoint::ResolveResume(run_, "auto"));
  EXPECT_EQ(reader.manifest().tensors_size(), 3 * static_cast<int>(kSpecs.size()));

  // Layout B: every rank alone (dp=1, tp=1), ZeRO off, full tensors.
  MpiCommunicator self(MPI_COMM_SELF, "self");
  std::vector<TrainableParam> full = TpParams(0, 1, /*sharded=*/false);
  for (auto& p : full) p.param.detach().zero_();
  DistributedOptimizer alone(full, &self, nullptr, TpOptions(/*zero1=*/false));
  alone.LoadState(reader, state.optimizer_step);
  EXPECT_EQ(alone.step(), 2);
  for (const checkpoint::LocalShard& s : state.shards) {
    const std::string kind = s.name.substr(0, s.name.find('.', 6) + 1);  // "optim.master." etc.
    const std::string param = s.name.substr(kind.size());
    torch::Tensor have = kind == "optim.master."    ? alone.master(param)
                         : kind == "optim.exp_avg." ? alone.exp_avg(param)
                                                    : alone.exp_avg_sq(param);
    for (size_t d = 0; d < s.offsets.size(); ++d)
      have = have.narrow(d, s.offsets[d], s.data.size(d));
    EXPECT_TRUE(have.equal(s.data)) << s.name;
  }
  // The parameters of both layouts agree, and the masters are the parameters.
  for (size_t i = 0; i < kSpecs.size(); ++i) {
    EXPECT_TRUE(LocalOf(full[i].param, i, tp.rank(), tp.size()).equal(params[i].param))
        << kSpecs[i].name;
    EXPECT_TRUE(alone.master(kSpecs[i].name).equal(full[i].param)) << kSpecs[i].name;
  }

  // Layout C: dp = world, tp = 1, ZeRO on again: each rank's rows equal layout B's.
  MpiCommunicator world(MPI_COMM_WORLD, "dp_all");
  std::vector<TrainableParam> again = TpParams(0, 1, /*sharded=*/false);
  DistributedOptimizer spread(again, &world, nullptr, TpOptions(/*zero1=*/true));
  spread.LoadState(reader, state.optimizer_step);
  for (size_t i = 0; i < kSpecs.size(); ++i) {
    const std::string& n = kSpecs[i].name;
    const int64_t rows = kSpecs[i].global[0], per = (rows + World() - 1) / World();
    const int64_t lo = std::min(rows, per * Rank()), len = std::min(rows, lo + per) - lo;
    EXPECT_TRUE(spread.master(n).equal(alone.master(n).narrow(0, lo, len))) << n;
    EXPECT_TRUE(spread.exp_avg(n).equal(alone.exp_avg(n).narrow(0, lo, len))) << n;
    EXPECT_TRUE(spread.exp_avg_sq(n).equal(alone.exp_avg_sq(n).narrow(0, lo, len))) << n;
    EXPECT_TRUE(again[i].param.equal(full[i].param)) << n;
  }
}

TEST_F(OptimizerCheckpoint, ResumedTrainingIsBitwiseEqualToUninterrupted) {
  MpiCommunicator dp(MPI_COMM_WORLD, "dp");
  const OptimizerOptions o = MlpOptions();
  RunResult straight = RunDp(o, 4, 1, &dp);

  std::vector<torch::Tensor> p = MakeMlp();
  auto train = [&](DistributedOptimizer& opt, int from, int to) {
    const int64_t per = kBatch / dp.size();
    for (int s = from; s < to; ++s) {
      auto [x, y] = GlobalBatch(s);
      opt.ZeroGrad();
      opt.PrepareBackward(true);
      MlpLoss(p, x.narrow(0, dp.rank() * per, per), y.narrow(0, dp.rank() * per, per)).backward();
      opt.Step(MlpLr(s, 4));
    }
  };
  {
    DistributedOptimizer first(Trainable(p, kMlpNames), &dp, nullptr, o);
    train(first, 0, 2);
    checkpoint::CheckpointOptions co;
    co.run_dir = run_;
    co.async = true;
    co.fail_on_error = true;
    checkpoint::Checkpointer ckpt(MPI_COMM_WORLD, co);
    checkpoint::CheckpointState state;
    state.shards = first.StateShards();
    state.optimizer_step = first.step();
    ckpt.Save(first.step(), std::move(state));
    ASSERT_TRUE(ckpt.Wait().committed);
  }
  for (auto& t : p)
    t.detach().normal_();  // the resumed run must not depend on what the params held
  DistributedOptimizer second(Trainable(p, kMlpNames), &dp, nullptr, o);
  checkpoint::CheckpointReader reader(checkpoint::ResolveResume(run_, "auto"));
  second.LoadState(reader, reader.manifest().step());
  train(second, 2, 4);
  for (size_t i = 0; i < p.size(); ++i) EXPECT_TRUE(p[i].equal(straight.params[i])) << kMlpNames[i];
}

// ---- Bad input. ----

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
}  // namespace lcl::trainer
