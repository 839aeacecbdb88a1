// What `lcl train` and `lcl eval` build before their loops: the cluster context, the run directory and per-rank
// logs, the device and dtype, the model (weights loaded, tower frozen), the tokenizer checked against the model,
// the trainable-parameter list the optimizer takes, and the model's tensors as checkpoint shards (each element
// stored by one rank).
//
//   RunSetup run = SetUpRun(mpi, loaded);  // context, logs, threads, seed, model from model.path
//   std::vector<TrainableParam> params = TrainableParams(*run.model.model, run.ctx->grid(), /*projector_only=*/false);
//   std::vector<checkpoint::LocalShard> shards = ModelShards(*run.model.model, run.ctx->grid());
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/checkpointer.h"
#include "cluster/cluster_context.h"
#include "sampler/prompt.h"
#include "sampler/tokenizer.h"
#include "model/multimodal_model.h"
#include "optim/optimizer.h"
#include "trainer/feature_cache.h"
#include "trainer/run_options.h"
#include "trainer/train_config.h"

namespace lcl::trainer {

struct RunModel {
  lcl::model::ModelConfig config;
  lcl::model::MultimodalModel model{nullptr};
  std::unique_ptr<sampler::Tokenizer> tokenizer;
  torch::Device device{torch::kCPU};
  torch::ScalarType dtype = torch::kFloat32;  // parameters and activations (bf16 on GPU with fp32 masters)
};

// What `lcl train` and `lcl eval` both start from. The context outlives the model (its TP group is the model's).
struct RunSetup {
  std::unique_ptr<cluster::ClusterContext> ctx;
  RunModel model;
};

// The one set-up of a run, collective over the world, in this order: the config's values and layout checked
// (ValidateConfig, ValidateLayout: before any communicator exists), the cluster context, run_dir created and
// proven writable (on rank 0, the verdict shared), one log file per rank in <run_dir>/logs, intra-op threads
// (RankThreads), the seed, then the model (BuildRunModel). Throws ConfigError naming the field for a bad config.
RunSetup SetUpRun(cluster::MpiSession& mpi, const LoadedConfig& loaded);

// Reads config.json and the weights of model.path (TP slices only), checks the tokenizer's image ids against the
// model's, freezes the tower. Throws ConfigError/CheckpointError naming the file and the mismatch.
RunModel BuildRunModel(cluster::ClusterContext& ctx, const LoadedConfig& loaded);

// The parameters that train (projector and decoder, or the projector only), with their TP placement, under their
// Hugging Face names (the names checkpoints use).
std::vector<lcl::optim::TrainableParam> TrainableParams(lcl::model::MultimodalModelImpl& model,
                                                        const cluster::ProcessGrid& grid, bool projector_only);

// Every model tensor (trainable and frozen) as checkpoint shards under its HF name: TP-split tensors from the
// dp_rank-0 rank of each TP position, replicated ones from rank 0 only.
std::vector<checkpoint::LocalShard> ModelShards(lcl::model::MultimodalModelImpl& model,
                                                const cluster::ProcessGrid& grid);

// Loads every model tensor's slice from a checkpoint (any TP/DP layout); a shape or dtype that differs is a
// CheckpointError naming the tensor.
void LoadModelShards(lcl::model::MultimodalModelImpl& model, const cluster::ProcessGrid& grid,
                     const checkpoint::CheckpointReader& reader);

// The run's tower-feature cache (data.feature_cache*) for the model's tower, its features [P, Cv] stored in the
// run's dtype; null when the config asks for none. Hashes the tower's weights (TowerFingerprint).
std::unique_ptr<FeatureCache> OpenFeatureCache(const TrainConfig& config, const RunModel& model);

// The tower as the cache calls it: host float32 pixels onto the run's device and dtype, then the frozen tower. The one
// place both training and `lcl data features` take it from, so their entries are the same.
FeatureCache::Tower TowerOf(const RunModel& model);

// The CPU generator's state as bytes, and back (exact resume of anything random).
std::string CpuRngState();
void SetCpuRngState(const std::string& bytes);

}  // namespace lcl::trainer
