// DistributedOptimizer: data-parallel gradient sync and AdamW with ZeRO-1 (DESIGN.md "Training
// step"): bucketed SUM reduction over DP overlapped with the last micro-step's backward -> global
// grad norm over DP and TP -> clip -> AdamW on this rank's rows of fp32 master weights ->
// all-gather of the updated rows.
//
//   DistributedOptimizer opt(std::move(params), &ctx.dp(), &ctx.tp(), OptimizerOptions{});
//   for (int step = 0; ...; ++step) {
//     opt.ZeroGrad();
//     for (int m = 0; m < accum; ++m) {
//       opt.PrepareBackward(/*last_micro_step=*/m + 1 == accum);
//       (model->forward(batch[m]).loss_sum / global_labelled_tokens).backward();
//     }
//     opt.WaitGradReduction();  // the DP reduction's end: the buckets backward did not launch, then the wait
//     StepStats s = opt.Step(LrAt(step, total, lr, min_lr, warmup_ratio));
//   }
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/checkpointer.h"
#include "cluster/communicator.h"
#include "cluster/trace.h"
#include "optim/lr_schedule.h"

namespace lcl::optim {

namespace internal {
class GradBuckets;
}

struct TrainableParam {
  std::string name;     // module path, e.g. "language_model.model.layers.0.self_attn.q_proj.weight"
  torch::Tensor param;  // this TP rank's local tensor (a leaf that requires grad)
  // The dim TP shards it along, as its layer declared it (model::TpPlacements, never guessed from the name);
  // -1 = replicated over TP (every TP rank has the full tensor). The gradient norm counts a replicated tensor once
  // per TP group and checkpoints store it from TP rank 0 only.
  int tp_split_dim = -1;
  std::vector<int64_t> global_shape;  // shape over all TP ranks
  std::vector<int64_t> tp_offsets;    // where this rank's local tensor starts in the global tensor
  bool weight_decay = true;           // false for norms and biases
};

struct OptimizerOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;        // decoupled (AdamW), for params with TrainableParam::weight_decay
  double clip_norm = 1.0;           // clip the global grad norm to this; <= 0 disables clipping
  bool zero1 = true;                // partition optimizer state over DP (ReduceScatter + AllGather)
  int64_t bucket_bytes = 25 << 20;  // fp32 gradient bytes per reduction bucket
  bool overlap = true;              // launch each bucket's reduction during the last backward
  // With overlap: each gradient hook also tests the oldest bucket in flight, so MPI moves the reductions during
  // backward (grad_buckets.h); false: they move only when Finish() waits.
  bool poll_in_backward = true;
  // The step timeline (spans of the update's parts, bucket launches); may be null.
  cluster::Tracer* tracer = nullptr;
  // AdamW with LibTorch's fused multi-tensor kernel (at::_fused_adamw_, torch.optim.AdamW(fused=True)) over all
  // of this rank's rows at once, the moments in one flat buffer; false: one tensor at a time with plain ops (the
  // reference the fused path is tested against).
  bool fused = true;
};

struct StepStats {
  double grad_norm = 0;  // global, before clipping
  bool clipped = false;
  // The update did not happen: the gradient norm or the guard was not finite (parameters, moments and the step
  // count are as before the call).
  bool skipped = false;
  double guard = 0;  // the guard tensor's value, read with the norm (0 without a guard)
  // In Step(): launching the buckets backward did not launch, and waiting for the reductions.
  double sync_wait_ms = 0;
  double optimizer_ms = 0;  // in Step(): norm, AdamW and the all-gather
  int buckets = 0;
  int buckets_launched_in_backward = 0;   // overlapped with backward (0 without overlap)
  int buckets_completed_in_backward = 0;  // finished before backward ended (needs poll_in_backward or TP traffic)
};

class DistributedOptimizer {
 public:
  // `dp` must outlive the optimizer; `tp` may be null (no TP). Every parameter must have the same
  // dtype (float32, bfloat16 or float16) and device. Throws lcl::ConfigError for bad parameters or
  // options.
  DistributedOptimizer(std::vector<TrainableParam> params, cluster::Communicator* dp, cluster::Communicator* tp,
                       OptimizerOptions options);
  ~DistributedOptimizer();
  DistributedOptimizer(const DistributedOptimizer&) = delete;
  DistributedOptimizer& operator=(const DistributedOptimizer&) = delete;

  // Drops the gradients (set to none), as at the start of each optimizer step.
  void ZeroGrad();
  // Before each micro-step's backward. On the last one, the hooks reduce each bucket asynchronously
  // as soon as all its gradients are accumulated (with options.overlap); earlier micro-steps only
  // accumulate.
  void PrepareBackward(bool last_micro_step);
  // Collective over DP. Ends the DP gradient reduction: launches the buckets the backward did not (parameters
  // that took part in no backward) and waits for every bucket. Returns the milliseconds spent. Step() calls it
  // when the caller did not, so the step reads either way; calling it by name puts the reduction's wait where a
  // reader of the training step can see it.
  double WaitGradReduction();
  // Collective over DP and TP. Waits for the reductions (WaitGradReduction() unless already called) (launching buckets
  // whose parameters took part in no backward), computes the global grad norm, clips, runs AdamW on this rank's rows
  // with learning rate `lr`, and all-gathers the updated parameters. Deterministic: same inputs give bitwise-identical
  // parameters.
  //
  // Nothing in it waits for the device until its end: the norm, the clip factor and the finite check stay tensors,
  // and the fused AdamW kernel skips the update itself when the check fails (its found_inf input, as AMP's
  // GradScaler uses it). `guard`, if defined, is a scalar tensor on the parameters' device (the step's loss): a
  // non-finite value skips the update too. The one read-back at the end fills grad_norm, clipped, skipped, guard.
  StepStats Step(double lr, const torch::Tensor& guard = {});
  int64_t step() const { return step_; }

  // This rank's optimizer state as boxes of the global tensors "optim.master.<name>",
  // "optim.exp_avg.<name>" and "optim.exp_avg_sq.<name>" (fp32), every element held by exactly one
  // rank in the world: TP-replicated params by TP rank 0 only; with ZeRO-1 each DP rank its rows,
  // without it DP rank 0. Store step() beside them.
  std::vector<checkpoint::LocalShard> StateShards() const;
  // Not collective. Reads this rank's boxes from a checkpoint saved with any DP/TP layout, ZeRO on
  // or off, sets the masters, moments and parameters, and the step count. Throws CheckpointError
  // (missing or mis-shaped).
  void LoadState(const checkpoint::CheckpointReader& reader, int64_t step);

  // This rank's fp32 master rows and moments of parameter `name` ([part rows, ...]; for tests and
  // tools).
  torch::Tensor master(const std::string& name) const;
  torch::Tensor exp_avg(const std::string& name) const;
  torch::Tensor exp_avg_sq(const std::string& name) const;
  const OptimizerOptions& options() const { return options_; }

 private:
  struct State;  // per parameter: TrainableParam, master rows, moments
  int Index(const std::string& name) const;
  torch::Tensor GradNormSquared(const std::vector<torch::Tensor>& grads);  // [1] float64, summed over TP and DP

  OptimizerOptions options_;
  cluster::Communicator* dp_;
  cluster::Communicator* tp_;
  std::vector<State> state_;
  std::unique_ptr<internal::GradBuckets> sync_;
  // The moments of every parameter, back to back (State::exp_avg / exp_avg_sq are views into them), and the step
  // count per parameter as the fused kernel reads it (fp32 scalars).
  torch::Tensor flat_exp_avg_, flat_exp_avg_sq_;
  std::vector<torch::Tensor> state_steps_;
  // WaitGradReduction() ran since the last Step(), taking this long.
  bool reduction_waited_ = false;
  double reduction_wait_ms_ = 0;
  int64_t step_ = 0;
};

}  // namespace lcl::optim
