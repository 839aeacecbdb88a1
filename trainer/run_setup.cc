// Model, tokenizer and parameter placement for the training and evaluation runs.
#include "trainer/run_setup.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "cluster/errors.h"
#include "cluster/log.h"
#include "trainer/hf_io.h"

namespace lcl::trainer {
namespace {

struct Placement {
  int split_dim = -1;
  std::vector<int64_t> global_shape;
  std::vector<int64_t> offsets;
};

// Where this rank's local tensor sits in the global tensor: TP slices are equal along the split dim.
Placement PlacementOf(const std::string& hf_name, const torch::Tensor& local, const cluster::ProcessGrid& grid) {
  Placement p;
  p.split_dim = TpSplitDim(hf_name);
  p.global_shape = local.sizes().vec();
  p.offsets.assign(local.dim(), 0);
  if (p.split_dim >= 0 && grid.shape().tp > 1) {
    p.global_shape[p.split_dim] *= grid.shape().tp;
    p.offsets[p.split_dim] = local.size(p.split_dim) * grid.tp_rank();
  }
  return p;
}

}  // namespace

int RankThreads(const TrainConfig& config, const cluster::MpiSession& mpi) {
  if (config.parallel().threads() > 0) return config.parallel().threads();
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::max(1, cores / std::max(1, mpi.local_size()));
}

sampler::PromptConfig PromptConfigOf(const TrainConfig& config, const ModelConfig& model) {
  sampler::PromptConfig prompt;
  prompt.image_tokens = model.vision.num_patches();
  prompt.max_length = config.data().max_length();
  prompt.layout = sampler::ParsePromptLayout(config.data().prompt_layout());
  prompt.image_markers = config.data().image_markers();
  prompt.support_names = config.data().support_names();
  return prompt;
}

RunModel BuildRunModel(cluster::ClusterContext& ctx, const LoadedConfig& loaded) {
  const TrainConfig& c = loaded.config;
  RunModel m;
  const std::string dir = c.model().path();
  m.config = ModelConfig::FromJsonFile(dir + "/config.json");
  m.config.activation_checkpointing = c.model().activation_checkpointing();
  m.config.Validate(ctx.grid().shape().tp);

  m.device = ctx.device();
  if (c.parallel().device() == "cuda" && !m.device.is_cuda()) {
    throw ConfigError(loaded.Where("parallel.device") +
                      ": parallel.device = cuda but CUDA is not available in this build or on this node; use auto");
  }
  if (c.parallel().device() == "cpu") m.device = torch::kCPU;
  const std::string& precision = c.precision();
  if (precision == "bf16" && !m.device.is_cuda()) {
    throw ConfigError(loaded.Where("precision") +
                      ": precision = bf16 needs a GPU (bf16 with fp32 master weights); CPU runs use fp32 (auto)");
  }
  m.dtype = (precision == "bf16" || (precision == "auto" && m.device.is_cuda())) ? torch::kBFloat16 : torch::kFloat32;

  const std::string tok_path = c.model().tokenizer().empty() ? dir + "/tokenizer.model" : c.model().tokenizer();
  m.tokenizer = std::make_unique<sampler::Tokenizer>(sampler::Tokenizer::Load(tok_path));
  const sampler::Tokenizer& tok = *m.tokenizer;
  if (tok.im_patch_id() != m.config.image_token_id || tok.im_start_id() != m.config.im_start_token_id ||
      tok.im_end_id() != m.config.im_end_token_id) {
    throw ConfigError("tokenizer " + tok_path + " gives image ids start/end/patch = " +
                      std::to_string(tok.im_start_id()) + "/" + std::to_string(tok.im_end_id()) + "/" +
                      std::to_string(tok.im_patch_id()) + " but " + dir + "/config.json has " +
                      std::to_string(m.config.im_start_token_id) + "/" + std::to_string(m.config.im_end_token_id) +
                      "/" + std::to_string(m.config.image_token_id) +
                      "; use the tokenizer.model that `lcl model init` wrote with these weights");
  }
  if (tok.vocab_size() > m.config.text.vocab_size) {
    throw ConfigError("tokenizer " + tok_path + " has " + std::to_string(tok.vocab_size()) +
                      " ids but the model vocabulary is " + std::to_string(m.config.text.vocab_size));
  }

  m.model = MultimodalModel(m.config, TpGroup{&ctx.tp()});
  HfLoadOptions load;
  load.vision_checkpoint = c.model().vision_checkpoint();
  LoadHfCheckpoint(*m.model, dir, load);
  m.model->to(m.device, m.dtype);
  for (auto& p : m.model->vision_tower->parameters()) p.set_requires_grad(false);
  return m;
}

std::vector<TrainableParam> TrainableParams(MultimodalModelImpl& model, const cluster::ProcessGrid& grid,
                                            bool projector_only) {
  std::vector<TrainableParam> out;
  for (auto& item : model.named_parameters()) {
    torch::Tensor p = item.value();
    if (!p.requires_grad()) continue;  // the frozen tower
    const bool is_projector = item.key().rfind("mm_projector.", 0) == 0;
    if (projector_only && !is_projector) {
      p.set_requires_grad(false);
      continue;
    }
    TrainableParam t;
    t.name = HfTensorName(item.key());
    t.param = p;
    Placement where = PlacementOf(t.name, p, grid);
    t.tp_split_dim = where.split_dim;
    t.global_shape = where.global_shape;
    t.tp_offsets = where.offsets;
    t.weight_decay = p.dim() >= 2;
    out.push_back(std::move(t));
  }
  return out;
}

std::vector<checkpoint::LocalShard> ModelShards(MultimodalModelImpl& model, const cluster::ProcessGrid& grid) {
  std::vector<checkpoint::LocalShard> out;
  for (auto& item : model.named_parameters()) {
    const std::string name = HfTensorName(item.key());
    Placement where = PlacementOf(name, item.value(), grid);
    const bool mine = where.split_dim >= 0 && grid.shape().tp > 1 ? grid.dp_rank() == 0 : grid.rank() == 0;
    if (!mine) continue;
    out.push_back({name, item.value().detach(), where.global_shape, where.offsets});
  }
  return out;
}

void LoadModelShards(MultimodalModelImpl& model, const cluster::ProcessGrid& grid,
                     const checkpoint::CheckpointReader& reader) {
  torch::NoGradGuard no_grad;
  for (auto& item : model.named_parameters()) {
    const std::string name = HfTensorName(item.key());
    torch::Tensor p = item.value();
    Placement where = PlacementOf(name, p, grid);
    reader.ExpectTensor(name, where.global_shape, p.scalar_type());
    if (p.is_cuda()) {
      torch::Tensor host = torch::empty(p.sizes(), p.options().device(torch::kCPU));
      reader.ReadInto(name, where.offsets, host);
      p.copy_(host);
    } else {
      torch::Tensor data = p.detach();
      reader.ReadInto(name, where.offsets, data);
    }
  }
}

std::string CpuRngState() {
  at::Tensor state = at::detail::getDefaultCPUGenerator().get_state();
  return std::string(reinterpret_cast<const char*>(state.data_ptr()), state.numel());
}

void SetCpuRngState(const std::string& bytes) {
  at::Tensor state = torch::empty({static_cast<int64_t>(bytes.size())}, torch::kUInt8);
  std::memcpy(state.data_ptr(), bytes.data(), bytes.size());
  at::Generator gen = at::detail::getDefaultCPUGenerator();  // a handle to the process-wide generator
  gen.set_state(state);
}

}  // namespace lcl::trainer
