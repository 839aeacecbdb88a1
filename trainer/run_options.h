// The one place the training config (trainer/config.proto) becomes each part's options: the training and evaluation
// episodes and their prompts, the optimizer, checkpoints, the cluster, the default file paths and the threads per
// rank. `lcl train`, `lcl eval` and `lcl data episodes --config` all take them from here, so a field means the same
// thing in every command (STYLE.md 15).
//
//   DataPaths paths = DataPathsOf(config);                   // <data.root>/train_pairs.jsonl when unset, ...
//   sampler::EpisodeConfig episodes = EpisodeOptionsOf(config);  // policy, shot, seed, templates (read here)
//   sampler::PromptConfig prompt = PromptOptionsOf(config, model.vision.num_patches(), EpisodeUse::kTraining);
//   optim::OptimizerOptions opt = OptimizerOptionsOf(config);
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "checkpoint/checkpointer.h"
#include "cluster/cluster_context.h"
#include "cluster/mpi_session.h"
#include "cluster/process_grid.h"
#include "optim/optimizer.h"
#include "sampler/episode.h"
#include "sampler/image_io.h"
#include "sampler/prompt.h"
#include "trainer/config.pb.h"
#include "trainer/feature_cache.h"

namespace lcl::trainer {

// The files a config names, with the defaults of the fields left empty.
struct DataPaths {
  std::string train_pairs;   // data.train_pairs, or <data.root>/train_pairs.jsonl
  std::string test_pairs;    // eval.test_pairs, or <data.root>/test_pairs.jsonl
  std::string tokenizer;     // model.tokenizer, or <model.path>/tokenizer.model
  std::string model_config;  // <model.path>/config.json
};
DataPaths DataPathsOf(const TrainConfig& config);

// Training episodes: data.policy, data.shot, seed, data.made_up_*, data.draw_with_replacement, data.lowercase_names,
// and data.templates read from its file (empty = the built-in templates). Throws what LoadTemplates throws for a bad
// templates file.
sampler::EpisodeConfig EpisodeOptionsOf(const TrainConfig& config);

// LCL-Mix's instruction files: data.mix_files with data.mix_weights, and relative image paths under
// data.mix_image_root (when set). Throws ConfigError naming the field for a count mismatch, a value that is not a
// number, a probability outside [0, 1] or a sum over 1.
struct MixFileOption {
  std::string path;
  double probability = 0;
};
std::vector<MixFileOption> MixFilesOf(const TrainConfig& config);

// Training under data.recipe official needs data.templates (the official ICL.json, which lcl does not ship): a
// ConfigError saying so when it is empty. Evaluation asks data.eval_question and needs none.
void CheckTrainingTemplates(const TrainConfig& config);

// Evaluation episodes (test pairs, ISEKAI lines and index classes alike).
struct EvalEpisodeOptions {
  std::vector<int> shots;                                          // eval.shots; {data.shot} when the list is empty
  uint64_t seed = 0;                                               // eval.seed
  sampler::EvalLabels labels = sampler::EvalLabels::kMadeUpWords;  // eval.labels
  std::vector<std::string> templates;                              // {data.eval_question}, else data.templates
  int made_up_max_letters = 10;                                    // data.made_up_max_letters
  bool lowercase_names = false;                                    // data.lowercase_names
  bool official = false;                                           // eval.protocol == official
};
EvalEpisodeOptions EvalEpisodeOptionsOf(const TrainConfig& config);

// What a prompt is built for: evaluation keeps the paper's prompt (data.support_names is a training aid only).
enum class EpisodeUse { kTraining, kEvaluation };

// How episodes become tokens: `image_tokens` patch tokens per image (the model's vision.num_patches()),
// data.max_length, too_long, min_shot, prompt_layout, loss_on, system, image_markers, and data.support_names for
// training. Throws ConfigError (listing the choices) for an unknown too_long, prompt_layout or loss_on.
sampler::PromptConfig PromptOptionsOf(const TrainConfig& config, int image_tokens, EpisodeUse use);

// Image preprocessing for a tower of `image_size` pixels: data.pad_color (ConfigError on an unknown colour).
sampler::ImageSpec ImageSpecOf(const TrainConfig& config, int image_size);

// The tower-feature cache: data.feature_cache, feature_cache_memory_mb, feature_cache_required. `enabled` is false
// when neither a directory nor (explicitly) memory is asked for: the tower then runs on every image.
FeatureCacheOptions FeatureCacheOptionsOf(const TrainConfig& config, bool* enabled);

// AdamW (optimizer.*) and the DP gradient sync (parallel.zero1, bucket_mb, overlap_grad_sync).
lcl::optim::OptimizerOptions OptimizerOptionsOf(const TrainConfig& config, cluster::Tracer* tracer = nullptr);

// The learning rate of optimizer step `step` of `total_steps`: optimizer.lr, min_lr, warmup_ratio.
double LearningRateAt(const TrainConfig& config, int64_t step, int64_t total_steps);

// Saves into run_dir with checkpoint.* (retention, async, fail_on_error, the test phase delay), recording `grid`.
checkpoint::CheckpointOptions CheckpointOptionsOf(const TrainConfig& config, const cluster::GridShape& grid);

// The process grid and communicators: parallel.tp, collective_timeout_s, and whether parallel.device allows CUDA.
cluster::ClusterOptions ClusterOptionsOf(const TrainConfig& config);

// Intra-op threads per rank: parallel.threads, or the node's cores shared by the ranks on this node.
int RankThreads(const TrainConfig& config, const cluster::MpiSession& mpi);

}  // namespace lcl::trainer
