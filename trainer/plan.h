// `lcl plan`: what a training config needs per rank before it is launched: memory (weights, gradients, fp32 masters,
// AdamW moments, gradient buckets, activations with and without checkpointing at the config's episode length,
// the attention workspace, runtime) and FLOPs per step, for the configured layout and for every tp x dp x micro-batch
// the world size allows, with which of them fit a given device memory. A model of the trainer's own allocations (the
// optimizer's and bucket buffers as optim/ allocates them, the decoder's saved tensors as model/ computes them), not
// a measurement: docs/performance.md compares it with measured peaks.
//
//   PlanInputs in;  in.world = 8;  in.device_bytes = 80.0 * (1 << 30);
//   Plan p = MakePlan(LoadTrainConfig("launch/configs/lcl_7b.pbtxt", {}), ModelConfig::FromPreset("llava-7b"), in);
//   PrintPlan(p, std::cout);
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "model/model_config.h"
#include "trainer/train_config.h"

namespace lcl::trainer {

struct PlanInputs {
  int world = 1;
  double device_bytes = 80.0 * (int64_t(1) << 30);  // per rank
  // true: a GPU run (bf16 weights and gradients, fp32 masters, as `precision: bf16` trains); false: this config on
  // CPU ranks (fp32 throughout, the parameters are their own masters; the host runtime and the feature cache's
  // memory tier count).
  bool gpu = true;
  int64_t tokens = 0;  // per episode; 0: estimated from the config (EstimateEpisode)
};

// Elements of the model's parameters. `trainable` and `decoder` are one TP rank's (split tensors' slices,
// replicated ones whole); `frozen` is the tower (replicated; all its layers are loaded).
struct ParamCounts {
  int64_t trainable = 0;  // decoder + projector on one TP rank
  int64_t decoder = 0;    // of which the decoder (embedding, layers, norm, LM head)
  int64_t projector = 0;
  int64_t frozen = 0;
};
ParamCounts CountParams(const lcl::model::ModelConfig& model, int tp);

// The longest episode the config draws: images (2 x shot + 1) and tokens (their patches plus the official
// prompt's text, about 36 tokens per image: 9,653 tokens for 33 images at 256 measured), at most data.max_length.
struct EpisodeSize {
  int images = 0;
  int64_t tokens = 0;
  int64_t labelled = 0;  // rows the LM head runs on
  bool estimated = true;
};
EpisodeSize EstimateEpisode(const TrainConfig& config, const lcl::model::ModelConfig& model, int64_t tokens);

// Bytes per rank of one layout.
struct LayoutPlan {
  int tp = 1, dp = 1, micro_batch = 1, grad_accum = 1;
  double weights = 0;      // trainable (this TP rank) + the frozen tower
  double gradients = 0;    // param.grad of the trainable parameters
  double buckets = 0;      // the DP reduction's fp32 buckets, ZeRO-1 shards and the all-gather's buffers
  double masters = 0;      // fp32 master rows (0 on CPU: fp32 parameters are their own masters)
  double moments = 0;      // AdamW's two fp32 moments for this rank's rows
  double activations = 0;  // as configured (model.activation_checkpointing)
  double activations_checkpointed = 0, activations_full = 0;
  double attention = 0;  // segment attention's per-episode outputs, log-sum-exp and copies (no mask: linear in T)
  double runtime = 0;    // CUDA context and workspaces, or on CPU the process's own libraries and the cache's memory
  double total = 0;
  bool fits = false;
  double flops_per_step = 0;            // model FLOPs of one optimizer step over all ranks (no recompute)
  double flops_per_step_recompute = 0;  // with checkpointing's second forward of the decoder
};

struct Plan {
  PlanInputs inputs;
  std::string config_path;
  ParamCounts params;  // at tp = 1
  int tower_layers = 0;
  EpisodeSize episode;
  bool checkpointing = false;
  bool zero1 = true;
  int global_batch = 1;
  LayoutPlan configured;            // parallel.tp, batch.micro_batch
  std::vector<LayoutPlan> layouts;  // every tp dividing the world (and the model) x micro-batch that forms the batch
};

// Checks the config and the configured layout as `lcl train` does (the same ConfigErrors: ValidateConfig,
// ValidateLayout for inputs.world, ModelConfig::Validate for tp), then plans.
Plan MakePlan(const LoadedConfig& loaded, const lcl::model::ModelConfig& model, const PlanInputs& inputs);

// The plan as text: the configured layout's breakdown, then a table of the layouts.
void PrintPlan(const Plan& plan, std::ostream& out);

}  // namespace lcl::trainer
