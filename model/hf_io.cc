// Hugging Face safetensors import and export.
#include "model/hf_io.h"

#include <filesystem>
#include <fstream>
#include <set>

#include "cluster/errors.h"

namespace lcl::model {
namespace {

const std::string kLlavaVision = "model.vision_tower.vision_tower.";

bool StartsWith(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }
bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Buffers HF checkpoints may carry that are not parameters.
bool Ignorable(const std::string& name, bool tied) {
  return EndsWith(name, "rotary_emb.inv_freq") || EndsWith(name, "embeddings.position_ids") ||
         (tied && name == "lm_head.weight");
}

// Where a parameter's tensor lives: the main checkpoint under its HF name, or (vision tower) the main
// checkpoint or the CLIP checkpoint under "vision_model.*".
struct Source {
  const checkpoint::SafetensorsCheckpoint* ckpt = nullptr;
  std::string name;
};

Source Locate(const std::string& hf_name, const checkpoint::SafetensorsCheckpoint& main,
              const checkpoint::SafetensorsCheckpoint* vision) {
  if (main.Has(hf_name)) return {&main, hf_name};
  if (StartsWith(hf_name, kLlavaVision)) {
    const std::string clip_name = hf_name.substr(kLlavaVision.size());
    if (main.Has(clip_name)) return {&main, clip_name};
    if (vision != nullptr && vision->Has(clip_name)) return {vision, clip_name};
  }
  return {};
}

// Reads this rank's slice of `src` into the parameter, where its layer's declared split puts it.
void LoadOne(const ParamPlacement& where, const Source& src) {
  const checkpoint::SafetensorsFile& file = src.ckpt->File(src.name);
  const checkpoint::SafetensorInfo& info = file.Info(src.name);
  const int dim = where.split.dim;
  const std::vector<int64_t>& expected = where.global_shape;
  if (info.shape != expected) {
    throw CheckpointError(file.path() + ": tensor '" + src.name + "' has shape " + checkpoint::ShapeString(info.shape) +
                          " but the model config expects " + checkpoint::ShapeString(expected) +
                          "; the checkpoint and config.json disagree (wrong --preset or config?)");
  }
  torch::Tensor param = where.param;
  torch::Tensor value =
      dim < 0 ? file.Read(src.name) : file.ReadSlice(src.name, dim, where.offsets[dim], param.size(dim));
  if (!value.is_floating_point()) {
    throw CheckpointError(file.path() + ": tensor '" + src.name + "' has dtype " + info.dtype +
                          "; expected F32, F16 or BF16");
  }
  param.copy_(value.to(param.scalar_type()));
}

}  // namespace

std::string HfTensorName(const std::string& p) {
  if (StartsWith(p, "language_model.")) return p.substr(std::string("language_model.").size());
  if (StartsWith(p, "vision_tower.")) return kLlavaVision + p.substr(std::string("vision_tower.").size());
  if (StartsWith(p, "mm_projector.")) return "model." + p;
  return p;
}

void LoadHfCheckpoint(MultimodalModelImpl& model, const std::string& dir, const HfLoadOptions& options) {
  checkpoint::SafetensorsCheckpoint main = checkpoint::SafetensorsCheckpoint::Open(dir);
  std::unique_ptr<checkpoint::SafetensorsCheckpoint> vision;
  if (!options.vision_checkpoint.empty()) {
    vision = std::make_unique<checkpoint::SafetensorsCheckpoint>(
        checkpoint::SafetensorsCheckpoint::Open(options.vision_checkpoint));
  }
  torch::NoGradGuard no_grad;
  std::set<std::string> used;
  for (const ParamPlacement& where : TpPlacements(model)) {
    const std::string hf_name = HfTensorName(where.name);
    Source src = Locate(hf_name, main, vision.get());
    if (src.ckpt == nullptr) {
      if (options.allow_missing_projector && StartsWith(hf_name, "model.mm_projector.")) continue;
      throw CheckpointError(main.origin() + ": missing tensor '" + hf_name + "'" +
                            (StartsWith(hf_name, kLlavaVision)
                                 ? " (nor 'vision_model.*' in a CLIP checkpoint; pass the CLIP vision checkpoint)"
                                 : "; the checkpoint does not match config.json"));
    }
    if (src.ckpt == &main) used.insert(src.name);
    LoadOne(where, src);
  }
  const bool tied = model.config().text.tie_word_embeddings;
  for (const auto& name : main.Names()) {
    if (!used.count(name) && !Ignorable(name, tied)) {
      throw CheckpointError(main.File(name).path() + ": unexpected tensor '" + name +
                            "' that the model (config.json) has no parameter for; check the config or the "
                            "checkpoint's architecture");
    }
  }
}

checkpoint::NamedTensors GatherHfTensors(MultimodalModelImpl& model, torch::ScalarType dtype) {
  torch::NoGradGuard no_grad;
  TpGroup tp = model.tp();
  checkpoint::NamedTensors out;
  for (const ParamPlacement& where : TpPlacements(model)) {
    const std::string hf_name = HfTensorName(where.name);
    torch::Tensor full = where.param.detach().contiguous();
    const int dim = where.split.dim;
    if (where.split.split() && tp.active()) {
      std::vector<int64_t> shape = {tp.size()};
      for (int64_t s : full.sizes()) shape.push_back(s);
      torch::Tensor gathered = torch::empty(shape, full.options());  // [tp, local...]
      tp.comm->AllGather(full, gathered);
      full = torch::cat(gathered.unbind(0), dim);
    }
    out.emplace_back(hf_name, full.to(dtype));
  }
  return out;
}

void ExportHfCheckpoint(MultimodalModelImpl& model, const std::string& out_dir, bool write,
                        const HfExportOptions& options) {
  checkpoint::NamedTensors tensors = GatherHfTensors(model, options.dtype);
  if (!write) return;
  std::filesystem::create_directories(out_dir);
  nlohmann::json config = model.config().ToJson();
  config["torch_dtype"] = options.dtype == torch::kBFloat16  ? "bfloat16"
                          : options.dtype == torch::kFloat16 ? "float16"
                                                             : "float32";
  std::ofstream(out_dir + "/config.json") << config.dump(2) << "\n";
  checkpoint::WriteSafetensorsCheckpoint(out_dir, tensors, options.max_shard_bytes);
}

}  // namespace lcl::model
