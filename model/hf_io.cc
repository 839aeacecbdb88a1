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
         (tied && EndsWith(name, "lm_head.weight"));
}

// A llava-hf checkpoint is told from a LLaVA v1 one by its decoder's and projector's prefixes.
HfLayout DetectLayout(const checkpoint::SafetensorsCheckpoint& ckpt) {
  for (const auto& name : ckpt.Names()) {
    for (const char* prefix :
         {"language_model.", "model.language_model.", "multi_modal_projector.", "model.multi_modal_projector."}) {
      if (StartsWith(name, prefix)) return HfLayout::kLlavaHf;
    }
  }
  return HfLayout::kLlavaV1;
}

bool IsVisionOrProjector(const std::string& param_name) {
  return StartsWith(param_name, "vision_tower.") || StartsWith(param_name, "mm_projector.");
}

// Where a parameter's tensor lives: the main checkpoint under its HF name, or (vision tower) the main
// checkpoint or the CLIP checkpoint under "vision_model.*".
struct Source {
  const checkpoint::SafetensorsCheckpoint* ckpt = nullptr;
  std::string name;
};

Source Locate(const std::string& param_name, HfLayout layout, const checkpoint::SafetensorsCheckpoint& main,
              const checkpoint::SafetensorsCheckpoint* vision) {
  for (const std::string& name : HfTensorNames(param_name, layout)) {
    if (main.Has(name)) return {&main, name};
  }
  const std::string hf_name = HfTensorName(param_name);
  if (StartsWith(hf_name, kLlavaVision)) {
    // A CLIP checkpoint: "vision_model.*" (CLIPModel, CLIPVisionModel before transformers 5) or without the prefix
    // (CLIPVisionModel.save_pretrained in transformers 5).
    const std::string clip_name = hf_name.substr(kLlavaVision.size());
    const std::string bare = clip_name.substr(std::string("vision_model.").size());
    for (const std::string& name : {clip_name, bare}) {
      if (main.Has(name)) return {&main, name};
      if (vision != nullptr && vision->Has(name)) return {vision, name};
    }
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

HfLayout ParseHfLayout(const std::string& name) {
  if (name == "llava-v1") return HfLayout::kLlavaV1;
  if (name == "llava-hf") return HfLayout::kLlavaHf;
  throw ConfigError("layout '" + name + "' is not one of llava-v1, llava-hf");
}

std::string HfTensorName(const std::string& p) {
  if (StartsWith(p, "language_model.")) return p.substr(std::string("language_model.").size());
  if (StartsWith(p, "vision_tower.")) return kLlavaVision + p.substr(std::string("vision_tower.").size());
  if (StartsWith(p, "mm_projector.")) return "model." + p;
  return p;
}

std::vector<std::string> HfTensorNames(const std::string& p, HfLayout layout) {
  if (layout == HfLayout::kLlavaV1) return {HfTensorName(p)};
  const std::string lm = "language_model.", decoder = "language_model.model.", tower = "vision_tower.vision_model.";
  if (StartsWith(p, decoder)) return {p, "model.language_model." + p.substr(decoder.size())};
  if (StartsWith(p, lm)) return {p, p.substr(lm.size())};  // language_model.lm_head.weight, lm_head.weight
  if (StartsWith(p, tower)) {
    const std::string rest = p.substr(tower.size());
    return {p, "vision_tower." + rest, "model." + p, "model.vision_tower." + rest};
  }
  if (StartsWith(p, "mm_projector.")) {
    // LLaVA's Sequential(Linear, GELU, Linear) indices 0 and 2 are llava-hf's linear_1 and linear_2.
    std::string rest = p.substr(std::string("mm_projector.").size());
    if (StartsWith(rest, "0.")) rest = "linear_1." + rest.substr(2);
    if (StartsWith(rest, "2.")) rest = "linear_2." + rest.substr(2);
    return {"multi_modal_projector." + rest, "model.multi_modal_projector." + rest};
  }
  return {p};
}

void LoadHfCheckpoint(MultimodalModelImpl& model, const std::string& dir, const HfLoadOptions& options) {
  checkpoint::SafetensorsCheckpoint main = checkpoint::SafetensorsCheckpoint::Open(dir);
  std::unique_ptr<checkpoint::SafetensorsCheckpoint> vision;
  if (!options.vision_checkpoint.empty()) {
    vision = std::make_unique<checkpoint::SafetensorsCheckpoint>(
        checkpoint::SafetensorsCheckpoint::Open(options.vision_checkpoint));
  }
  const HfLayout layout = DetectLayout(main);
  torch::NoGradGuard no_grad;
  std::set<std::string> used;
  for (const ParamPlacement& where : TpPlacements(model)) {
    if (options.text_only && IsVisionOrProjector(where.name)) continue;
    const std::string hf_name = HfTensorNames(where.name, layout)[0];
    Source src = Locate(where.name, layout, main, vision.get());
    if (src.ckpt == nullptr) {
      if (options.allow_missing_projector && StartsWith(where.name, "mm_projector.")) continue;
      throw CheckpointError(main.origin() + ": missing tensor '" + hf_name + "'" +
                            (StartsWith(where.name, "vision_tower.")
                                 ? " (nor 'vision_model.*' in a CLIP checkpoint): give the tower's CLIP checkpoint "
                                   "(--vision, model.vision_checkpoint), or load a plain LlamaForCausalLM text-only"
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

checkpoint::NamedTensors GatherHfTensors(MultimodalModelImpl& model, torch::ScalarType dtype, HfLayout layout) {
  torch::NoGradGuard no_grad;
  TpGroup tp = model.tp();
  checkpoint::NamedTensors out;
  for (const ParamPlacement& where : TpPlacements(model)) {
    const std::string hf_name = HfTensorNames(where.name, layout)[0];
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
  // The config first: a model the layout cannot express fails before any collective.
  nlohmann::json config =
      options.layout == HfLayout::kLlavaHf ? model.config().ToLlavaHfJson() : model.config().ToJson();
  checkpoint::NamedTensors tensors = GatherHfTensors(model, options.dtype, options.layout);
  if (!write) return;
  std::filesystem::create_directories(out_dir);
  config["torch_dtype"] = options.dtype == torch::kBFloat16  ? "bfloat16"
                          : options.dtype == torch::kFloat16 ? "float16"
                                                             : "float32";
  std::ofstream(out_dir + "/config.json") << config.dump(2) << "\n";
  checkpoint::WriteSafetensorsCheckpoint(out_dir, tensors, options.max_shard_bytes);
}

}  // namespace lcl::model
