// Hugging Face safetensors import and export.
#include "trainer/hf_io.h"

#include <filesystem>
#include <fstream>
#include <set>

#include "cluster/errors.h"

namespace lcl::trainer {
namespace {

const std::string kLlavaVision = "model.vision_tower.vision_tower.";

bool StartsWith(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }
bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string ShapeString(c10::IntArrayRef shape) { return "[" + c10::Join(", ", shape) + "]"; }

// Buffers HF checkpoints may carry that are not parameters.
bool Ignorable(const std::string& name, bool tied) {
  return EndsWith(name, "rotary_emb.inv_freq") || EndsWith(name, "embeddings.position_ids") ||
         (tied && name == "lm_head.weight");
}

// Where a parameter's tensor lives: the main checkpoint under its HF name, or (vision tower) the main
// checkpoint or the CLIP checkpoint under "vision_model.*".
struct Source {
  const SafetensorsCheckpoint* ckpt = nullptr;
  std::string name;
};

Source Locate(const std::string& hf_name, const SafetensorsCheckpoint& main, const SafetensorsCheckpoint* vision) {
  if (main.Has(hf_name)) return {&main, hf_name};
  if (StartsWith(hf_name, kLlavaVision)) {
    const std::string clip_name = hf_name.substr(kLlavaVision.size());
    if (main.Has(clip_name)) return {&main, clip_name};
    if (vision != nullptr && vision->Has(clip_name)) return {vision, clip_name};
  }
  return {};
}

void LoadOne(torch::Tensor& param, const std::string& hf_name, const Source& src, TpGroup tp) {
  const SafetensorsFile& file = src.ckpt->File(src.name);
  const SafetensorInfo& info = file.Info(src.name);
  const int dim = TpSplitDim(hf_name);
  std::vector<int64_t> expected = param.sizes().vec();
  if (dim >= 0) expected[dim] *= tp.size();
  if (info.shape != expected) {
    throw CheckpointError(file.path() + ": tensor '" + src.name + "' has shape " + ShapeString(info.shape) +
                          " but the model config expects " + ShapeString(expected) +
                          "; the checkpoint and config.json disagree (wrong --preset or config?)");
  }
  torch::Tensor value =
      dim < 0 ? file.Read(src.name) : file.ReadSlice(src.name, dim, tp.rank() * param.size(dim), param.size(dim));
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

int TpSplitDim(const std::string& n) {
  if (StartsWith(n, "model.vision_tower.") || StartsWith(n, "model.mm_projector.")) return -1;
  if (n == "model.embed_tokens.weight" || n == "lm_head.weight") return 0;
  for (const char* col :
       {".q_proj.weight", ".k_proj.weight", ".v_proj.weight", ".gate_proj.weight", ".up_proj.weight"}) {
    if (EndsWith(n, col)) return 0;
  }
  if (EndsWith(n, ".o_proj.weight") || EndsWith(n, ".down_proj.weight")) return 1;
  return -1;
}

void LoadHfCheckpoint(MultimodalModelImpl& model, const std::string& dir, const HfLoadOptions& options) {
  SafetensorsCheckpoint main = SafetensorsCheckpoint::Open(dir);
  std::unique_ptr<SafetensorsCheckpoint> vision;
  if (!options.vision_checkpoint.empty()) {
    vision = std::make_unique<SafetensorsCheckpoint>(SafetensorsCheckpoint::Open(options.vision_checkpoint));
  }
  torch::NoGradGuard no_grad;
  std::set<std::string> used;
  for (auto& item : model.named_parameters()) {
    const std::string hf_name = HfTensorName(item.key());
    Source src = Locate(hf_name, main, vision.get());
    if (src.ckpt == nullptr) {
      if (options.allow_missing_projector && StartsWith(hf_name, "model.mm_projector.")) continue;
      throw CheckpointError(main.origin() + ": missing tensor '" + hf_name + "'" +
                            (StartsWith(hf_name, kLlavaVision)
                                 ? " (nor 'vision_model.*' in a CLIP checkpoint; pass the CLIP vision checkpoint)"
                                 : "; the checkpoint does not match config.json"));
    }
    if (src.ckpt == &main) used.insert(src.name);
    LoadOne(item.value(), hf_name, src, model.tp());
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

NamedTensors GatherHfTensors(MultimodalModelImpl& model, torch::ScalarType dtype) {
  torch::NoGradGuard no_grad;
  TpGroup tp = model.tp();
  NamedTensors out;
  for (const auto& item : model.named_parameters()) {
    const std::string hf_name = HfTensorName(item.key());
    torch::Tensor full = item.value().detach().contiguous();
    const int dim = TpSplitDim(hf_name);
    if (dim >= 0 && tp.active()) {
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
  NamedTensors tensors = GatherHfTensors(model, options.dtype);
  if (!write) return;
  std::filesystem::create_directories(out_dir);
  nlohmann::json config = model.config().ToJson();
  config["torch_dtype"] = options.dtype == torch::kBFloat16  ? "bfloat16"
                          : options.dtype == torch::kFloat16 ? "float16"
                                                             : "float32";
  std::ofstream(out_dir + "/config.json") << config.dump(2) << "\n";
  WriteSafetensorsCheckpoint(out_dir, tensors, options.max_shard_bytes);
}

}  // namespace lcl::trainer
