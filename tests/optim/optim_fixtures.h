// Fixtures shared by the optimizer tests: a small MLP trained data-parallel (with a one-process torch AdamW
// reference), and hand-built TP layouts of parameters split along dim 0, along dim 1, and replicated.
//
//   RunResult ref = RunReference(MlpOptions(), /*steps=*/4);              // one process, torch::optim::AdamW
//   RunResult got = RunDp(MlpOptions(), /*steps=*/4, /*micro=*/2, &dp);  // every rank its slice of the batch
//   std::vector<TrainableParam> params = TpParams(tp.rank(), tp.size());   // kSpecs, this TP rank's slices
#pragma once

#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "cluster/communicator.h"
#include "optim/optimizer.h"

namespace lcl::optim::testing {

int Rank();   // in MPI_COMM_WORLD
int World();  // MPI_COMM_WORLD's size

// ---- A small MLP: y = fc2(gelu(fc1(x))), loss = sum of squared errors (SUM-scaled). ----

// The global batch, split evenly over 2 or 4 ranks.
constexpr int64_t kBatch = 8;
// fc1.weight, fc1.bias, fc2.weight, fc2.bias.
extern const std::vector<std::string> kMlpNames;

// Fixed-seed parameters; fc2 has 5 rows: uneven over 2 ranks and, over 4, leaves the last rank no rows of it.
std::vector<torch::Tensor> MakeMlp();
torch::Tensor MlpLoss(const std::vector<torch::Tensor>& p, const torch::Tensor& x, const torch::Tensor& y);
// The global batch (x [kBatch, 8], y [kBatch, 5]) of `step`, the same on every rank.
std::pair<torch::Tensor, torch::Tensor> GlobalBatch(int step);
// Replicated (no TP) trainable parameters; weight decay on the 2-D ones.
std::vector<TrainableParam> Trainable(const std::vector<torch::Tensor>& p, const std::vector<std::string>& names);
// Weight decay 0.1, a clip norm that clips the first step only, buckets of 256 B (several).
OptimizerOptions MlpOptions();
double MlpLr(int step, int steps);

struct RunResult {
  std::vector<torch::Tensor> params;
  std::vector<StepStats> stats;
};

// Each rank of `dp` trains on its slice of every global batch, in `micro` micro-steps.
RunResult RunDp(const OptimizerOptions& o, int steps, int micro, cluster::Communicator* dp);
// One process, the whole batch: clip_grad_norm_ and torch::optim::AdamW (decay only on the 2-D weights).
RunResult RunReference(const OptimizerOptions& o, int steps);
void ExpectParamsClose(const RunResult& a, const RunResult& b, double rtol, double atol);

// ---- Hand-built TP layouts. ----

struct Spec {
  std::string name;
  std::vector<int64_t> global;
  int split;  // over TP; -1 replicated
};
// col.weight [8, 6] split 0, row.weight [6, 8] split 1, norm.weight [6] and odd.weight [5, 3] replicated.
extern const std::vector<Spec> kSpecs;

torch::Tensor GlobalInit(size_t i);  // the global start value of kSpecs[i]
// The gradient DP rank `d` contributes at `step` (identical on the TP ranks for replicated parameters).
torch::Tensor GlobalGrad(size_t i, int d, int step);
// TP rank `tp_rank`'s slice of a global tensor of kSpecs[i].
torch::Tensor LocalOf(const torch::Tensor& global, size_t i, int tp_rank, int tp);
// kSpecs as TP rank `tp_rank` of `tp` holds them; `sharded` = false: all replicated, full tensors.
std::vector<TrainableParam> TpParams(int tp_rank, int tp, bool sharded = true);
// Sets the gradients as DP rank `d` of a layout would have them (no backward: the sync packs them at Step).
void SetTpGrads(std::vector<TrainableParam>& params, int d, int tp_rank, int tp, int step);
// Weight decay 0.1, a large eps (so clipping shows in the update), clip norm 2, buckets of 100 B.
OptimizerOptions TpOptions(bool zero1);

}  // namespace lcl::optim::testing
