// The optimizer tests' shared MLP, its references, and the hand-built TP layouts.
#include "tests/optim/optim_fixtures.h"

#include <gtest/gtest.h>

#include <memory>

#include "tests/test_main.h"

namespace lcl::optim::testing {

int Rank() { return lcl::testing::Mpi().rank(); }
int World() { return lcl::testing::Mpi().size(); }

const std::vector<std::string> kMlpNames = {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"};

std::vector<torch::Tensor> MakeMlp() {
  torch::manual_seed(7);
  std::vector<torch::Tensor> p = {torch::randn({16, 8}) * 0.3, torch::randn({16}) * 0.1, torch::randn({5, 16}) * 0.3,
                                  torch::randn({5}) * 0.1};
  for (auto& t : p) t.requires_grad_();
  return p;
}

torch::Tensor MlpLoss(const std::vector<torch::Tensor>& p, const torch::Tensor& x, const torch::Tensor& y) {
  torch::Tensor h = torch::gelu(torch::addmm(p[1], x, p[0].t()));  // [B, 16]
  torch::Tensor out = torch::addmm(p[3], h, p[2].t());             // [B, 5]
  return (out - y).square().sum();
}

std::pair<torch::Tensor, torch::Tensor> GlobalBatch(int step) {
  torch::manual_seed(100 + step);  // the same on every rank
  torch::Tensor x = torch::randn({kBatch, 8});
  return {x, torch::randn({kBatch, 5}) * 2};
}

std::vector<TrainableParam> Trainable(const std::vector<torch::Tensor>& p, const std::vector<std::string>& names) {
  std::vector<TrainableParam> out;
  for (size_t i = 0; i < p.size(); ++i) {
    std::vector<int64_t> shape = p[i].sizes().vec();
    out.push_back(TrainableParam{names[i], p[i], -1, shape, std::vector<int64_t>(shape.size(), 0), p[i].dim() >= 2});
  }
  return out;
}

OptimizerOptions MlpOptions() {
  OptimizerOptions o;
  o.weight_decay = 0.1;
  o.clip_norm = 95.0;    // the reference norms are 107, 92, 90, 77: the first step clips, the others do not
  o.bucket_bytes = 256;  // several buckets
  return o;
}

double MlpLr(int step, int steps) { return LrAt(step, steps, 1e-2, 1e-3, 0.3); }

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
    for (auto& g : ref.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(MlpLr(s, steps));
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

const std::vector<Spec> kSpecs = {
    {"col.weight", {8, 6}, 0}, {"row.weight", {6, 8}, 1}, {"norm.weight", {6}, -1}, {"odd.weight", {5, 3}, -1}};

torch::Tensor GlobalInit(size_t i) {
  torch::manual_seed(50 + static_cast<int>(i));
  return torch::randn(kSpecs[i].global);
}

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

std::vector<TrainableParam> TpParams(int tp_rank, int tp, bool sharded) {
  std::vector<TrainableParam> out;
  for (size_t i = 0; i < kSpecs.size(); ++i) {
    const int split = sharded ? kSpecs[i].split : -1;
    torch::Tensor local = (split < 0 ? GlobalInit(i) : LocalOf(GlobalInit(i), i, tp_rank, tp)).clone();
    std::vector<int64_t> offsets(kSpecs[i].global.size(), 0);
    if (split >= 0) offsets[split] = tp_rank * local.size(split);
    out.push_back(
        TrainableParam{kSpecs[i].name, local.requires_grad_(), split, kSpecs[i].global, offsets, local.dim() >= 2});
  }
  return out;
}

void SetTpGrads(std::vector<TrainableParam>& params, int d, int tp_rank, int tp, int step) {
  for (size_t i = 0; i < params.size(); ++i) {
    torch::Tensor g = GlobalGrad(i, d, step);
    params[i].param.mutable_grad() = (params[i].tp_split_dim < 0 ? g : LocalOf(g, i, tp_rank, tp)).clone();
  }
}

OptimizerOptions TpOptions(bool zero1) {
  OptimizerOptions o;
  o.weight_decay = 0.1;
  o.eps = 0.5;  // large, so the update depends on the gradient's magnitude and clipping shows in the result
  o.clip_norm = 2.0;
  o.zero1 = zero1;
  o.bucket_bytes = 100;
  return o;
}

}  // namespace lcl::optim::testing
