// What `lcl train` and `lcl eval` build before their loops: the device and dtype, the model (weights loaded,
// tower frozen), the tokenizer checked against the model, the trainable-parameter list the optimizer takes, the
// per-rank thread count, and the model's tensors as checkpoint shards (each element stored by one rank).
//
//   RunModel m = BuildRunModel(ctx, loaded);          // model on ctx.device(), weights from model.path
//   std::vector<TrainableParam> params = TrainableParams(*m.model, ctx.grid(), /*projector_only=*/false);
//   std::vector<checkpoint::LocalShard> shards = ModelShards(*m.model, ctx.grid());
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
#include "trainer/multimodal_model.h"
#include "trainer/optimizer.h"
#include "trainer/train_config.h"

namespace lcl::trainer {

struct RunModel {
  ModelConfig config;
  MultimodalModel model{nullptr};
  std::unique_ptr<sampler::Tokenizer> tokenizer;
  torch::Device device{torch::kCPU};
  torch::ScalarType dtype = torch::kFloat32;  // parameters and activations (bf16 on GPU with fp32 masters)
};

// How episodes become tokens for this config and model (training and evaluation alike): patch tokens per image,
// the length limit, the layout and the image markers.
sampler::PromptConfig PromptConfigOf(const TrainConfig& config, const ModelConfig& model);

// Intra-op threads per rank: the config's, or the node's cores shared by the ranks on this node.
int RankThreads(const TrainConfig& config, const cluster::MpiSession& mpi);

// Reads config.json and the weights of model.path (TP slices only), checks the tokenizer's image ids against the
// model's, freezes the tower. Throws ConfigError/CheckpointError naming the file and the mismatch.
RunModel BuildRunModel(cluster::ClusterContext& ctx, const LoadedConfig& loaded);

// The parameters that train (projector and decoder, or the projector only), with their TP placement, under their
// Hugging Face names (the names checkpoints use).
std::vector<TrainableParam> TrainableParams(MultimodalModelImpl& model, const cluster::ProcessGrid& grid,
                                            bool projector_only);

// Every model tensor (trainable and frozen) as checkpoint shards under its HF name: TP-split tensors from the
// dp_rank-0 rank of each TP position, replicated ones from rank 0 only.
std::vector<checkpoint::LocalShard> ModelShards(MultimodalModelImpl& model, const cluster::ProcessGrid& grid);

// Loads every model tensor's slice from a checkpoint (any TP/DP layout); a shape or dtype that differs is a
// CheckpointError naming the tensor.
void LoadModelShards(MultimodalModelImpl& model, const cluster::ProcessGrid& grid,
                     const checkpoint::CheckpointReader& reader);

// The CPU generator's state as bytes, and back (exact resume of anything random).
std::string CpuRngState();
void SetCpuRngState(const std::string& bytes);

}  // namespace lcl::trainer
