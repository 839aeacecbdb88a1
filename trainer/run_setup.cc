// The set-up shared by the training and evaluation runs: run directory, logging, seed, threads, model, tokenizer,
// and parameter placement.
#include "trainer/run_setup.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "cluster/errors.h"
#include "cluster/log.h"
#include "cluster/logging.h"
#include "model/hf_io.h"

namespace lcl::trainer {
namespace {

namespace fs = std::filesystem;

// Where each parameter's local tensor sits in the global tensor, as its layer declared it. The model's TP group is
// the grid's (BuildRunModel makes it so); a model built over another group would give the wrong offsets.
std::vector<lcl::model::ParamPlacement> PlacementOf(const lcl::model::MultimodalModelImpl& model,
                                                    const cluster::ProcessGrid& grid) {
  CHECK(model.tp().size() == grid.shape().tp && model.tp().rank() == grid.tp_rank())
      << "the model's TP group (rank " << model.tp().rank() << " of " << model.tp().size()
      << ") is not the grid's (rank " << grid.tp_rank() << " of " << grid.shape().tp << ")";
  return lcl::model::TpPlacements(model);
}

// Rank 0 creates the run directory and proves it can write there; every rank learns the verdict, so a bad
// run_dir is one clear error on every rank before anything is built.
void PrepareRunDir(cluster::ClusterContext& ctx, const LoadedConfig& loaded) {
  const std::string dir = loaded.config.run_dir();
  std::string error;
  if (ctx.grid().rank() == 0) {
    std::error_code ec;
    fs::create_directories(dir + "/logs", ec);
    const std::string probe = dir + "/.write_probe";
    std::ofstream out(probe);
    if (ec || !out || !(out << "ok") || !out.flush()) {
      error = loaded.Where("run_dir") + ": run_dir '" + dir + "' is not writable (" +
              (ec ? ec.message() : std::string(std::strerror(errno))) +
              "); choose a directory you can write (--set run_dir=...)";
    }
    out.close();
    fs::remove(probe, ec);
  }
  std::string verdict = ctx.control().BroadcastBytes(error);
  if (!verdict.empty()) throw ConfigError(verdict);
}

// A NaN or Inf weight would only show as a non-finite loss at step 1, with advice about the learning rate: name
// the tensor and where it came from instead.
void ExpectFiniteWeights(lcl::model::MultimodalModelImpl& model, const std::string& source) {
  torch::NoGradGuard no_grad;
  for (const auto& item : model.named_parameters()) {
    if (!torch::isfinite(item.value()).all().item<bool>()) {
      throw DataError(source + ": tensor '" + lcl::model::HfTensorName(item.key()) +
                      "' holds NaN or Inf values; the weights are corrupt (or were saved after training diverged): "
                      "use another model or checkpoint");
    }
  }
}

}  // namespace

RunSetup SetUpRun(cluster::MpiSession& mpi, const LoadedConfig& loaded) {
  const TrainConfig& c = loaded.config;
  // What needs no MPI group first: a bad config is one clear error before any communicator exists.
  ValidateConfig(loaded);
  ValidateLayout(loaded, mpi.size());
  RunSetup run;
  run.ctx = std::make_unique<cluster::ClusterContext>(mpi, ClusterOptionsOf(c));
  PrepareRunDir(*run.ctx, loaded);
  cluster::InitLogging("lcl", mpi.rank(), mpi.size(), c.run_dir() + "/logs");
  torch::set_num_threads(RankThreads(c, mpi));
  // Before the model is built: every random draw of the run follows from the seed.
  torch::manual_seed(c.seed());
  run.model = BuildRunModel(*run.ctx, loaded);
  return run;
}

RunModel BuildRunModel(cluster::ClusterContext& ctx, const LoadedConfig& loaded) {
  const TrainConfig& c = loaded.config;
  RunModel m;
  const std::string dir = c.model().path();
  const DataPaths paths = DataPathsOf(c);
  m.config = lcl::model::ModelConfig::FromHfDirectory(dir, c.model().vision_checkpoint());
  if (m.config.use_im_start_end >= 0 && (m.config.use_im_start_end == 1) != c.data().image_markers()) {
    const bool markers = m.config.use_im_start_end == 1;
    throw ConfigError(
        loaded.Where("data.image_markers") + ": data.image_markers=" + (c.data().image_markers() ? "true" : "false") +
        " but " + paths.model_config + " says mm_use_im_start_end=" + (markers ? "true" : "false") +
        "; prompts must wrap images as the model was trained: set data.image_markers: " + (markers ? "true" : "false"));
  }
  m.config.use_im_start_end = c.data().image_markers() ? 1 : 0;  // checkpoints and exports record the prompt layout
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

  const std::string& tok_path = paths.tokenizer;
  m.tokenizer = std::make_unique<sampler::Tokenizer>(sampler::Tokenizer::Load(tok_path));
  const sampler::Tokenizer& tok = *m.tokenizer;
  if (tok.im_patch_id() != m.config.image_token_id || tok.im_start_id() != m.config.im_start_token_id ||
      tok.im_end_id() != m.config.im_end_token_id) {
    throw ConfigError("tokenizer " + tok_path +
                      " gives image ids start/end/patch = " + std::to_string(tok.im_start_id()) + "/" +
                      std::to_string(tok.im_end_id()) + "/" + std::to_string(tok.im_patch_id()) + " but " + dir +
                      "/config.json has " + std::to_string(m.config.im_start_token_id) + "/" +
                      std::to_string(m.config.im_end_token_id) + "/" + std::to_string(m.config.image_token_id) +
                      "; use the tokenizer.model that `lcl model init` wrote with these weights");
  }
  if (tok.vocab_size() > m.config.text.vocab_size) {
    throw ConfigError("tokenizer " + tok_path + " has " + std::to_string(tok.vocab_size()) +
                      " ids but the model vocabulary is " + std::to_string(m.config.text.vocab_size));
  }

  m.model = lcl::model::MultimodalModel(m.config, lcl::model::TpGroup{&ctx.tp()});
  lcl::model::HfLoadOptions load;
  load.vision_checkpoint = c.model().vision_checkpoint();
  lcl::model::LoadHfCheckpoint(*m.model, dir, load);
  ExpectFiniteWeights(*m.model, dir);
  m.model->to(m.device, m.dtype);
  for (auto& p : m.model->vision_tower->parameters()) p.set_requires_grad(false);
  return m;
}

std::vector<lcl::optim::TrainableParam> TrainableParams(lcl::model::MultimodalModelImpl& model,
                                                        const cluster::ProcessGrid& grid, bool projector_only) {
  std::vector<lcl::optim::TrainableParam> out;
  for (lcl::model::ParamPlacement& where : PlacementOf(model, grid)) {
    torch::Tensor p = where.param;
    if (!p.requires_grad()) continue;  // the frozen tower
    const bool is_projector = where.name.rfind("mm_projector.", 0) == 0;
    if (projector_only && !is_projector) {
      p.set_requires_grad(false);
      continue;
    }
    lcl::optim::TrainableParam t;
    t.name = lcl::model::HfTensorName(where.name);
    t.param = p;
    t.tp_split_dim = where.split.dim;
    t.global_shape = std::move(where.global_shape);
    t.tp_offsets = std::move(where.offsets);
    t.weight_decay = p.dim() >= 2;
    out.push_back(std::move(t));
  }
  return out;
}

std::vector<checkpoint::LocalShard> ModelShards(lcl::model::MultimodalModelImpl& model,
                                                const cluster::ProcessGrid& grid) {
  std::vector<checkpoint::LocalShard> out;
  for (lcl::model::ParamPlacement& where : PlacementOf(model, grid)) {
    const std::string name = lcl::model::HfTensorName(where.name);
    const bool mine = where.split.split() && grid.shape().tp > 1 ? grid.dp_rank() == 0 : grid.rank() == 0;
    if (!mine) continue;
    out.push_back({name, where.param.detach(), std::move(where.global_shape), std::move(where.offsets)});
  }
  return out;
}

void LoadModelShards(lcl::model::MultimodalModelImpl& model, const cluster::ProcessGrid& grid,
                     const checkpoint::CheckpointReader& reader) {
  torch::NoGradGuard no_grad;
  for (const lcl::model::ParamPlacement& where : PlacementOf(model, grid)) {
    const std::string name = lcl::model::HfTensorName(where.name);
    torch::Tensor p = where.param;
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
  ExpectFiniteWeights(model, reader.dir());
}

std::unique_ptr<FeatureCache> OpenFeatureCache(const TrainConfig& config, const RunModel& model) {
  bool enabled = false;
  FeatureCacheOptions options = FeatureCacheOptionsOf(config, &enabled);
  if (!enabled) return nullptr;
  const auto& v = model.config.vision;
  auto cache = std::make_unique<FeatureCache>(options, TowerFingerprint(*model.model.ptr()->vision_tower),
                                              std::vector<int64_t>{v.num_patches(), v.hidden_size}, model.dtype);
  LOG(INFO) << "tower-feature cache: " << (cache->disk_enabled() ? options.dir : std::string("no directory"))
            << " (tower " << cache->fingerprint() << "), " << (options.memory_bytes >> 20) << " MB of host memory";
  return cache;
}

FeatureCache::Tower TowerOf(const RunModel& model) {
  lcl::model::ClipVisionModel tower = model.model->vision_tower;
  const torch::Device device = model.device;
  const torch::ScalarType dtype = model.dtype;
  return [tower, device, dtype](const torch::Tensor& pixels) mutable { return tower(pixels.to(device, dtype)); };
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
