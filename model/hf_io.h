// Hugging Face weights in and out of a MultimodalModel. Names: LLaMA/Vicuna ("model.layers.N.self_attn.q_proj.
// weight", "model.norm.weight", "lm_head.weight"), the LLaVA projector ("model.mm_projector.*") and the vision
// tower inside a LLaVA checkpoint ("model.vision_tower.vision_tower.vision_model.*") or in a separate CLIP
// checkpoint ("vision_model.*"). Each TP rank reads only its slice; export all-gathers the slices.
//
//   LoadHfCheckpoint(*model, "ckpt/", {/*vision_checkpoint=*/"clip-vit-large-patch14/"});
//   ExportHfCheckpoint(*model, "out/", /*write=*/grid.rank() == 0);  // collective over the TP group
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "model/multimodal_model.h"
#include "checkpoint/safetensors.h"

namespace lcl::model {

// The two ways LLaVA checkpoints name their tensors:
//   kLlavaV1: LLaVA's own (LLaVA v1 / v1.5, Vicuna, a plain LlamaForCausalLM): "model.layers.*", "lm_head.weight",
//             "model.mm_projector.{0,2}.*", "model.vision_tower.vision_tower.vision_model.*";
//   kLlavaHf: transformers' LlavaForConditionalGeneration (the llava-hf checkpoints): "language_model.model.*",
//             "language_model.lm_head.weight", "multi_modal_projector.linear_{1,2}.*", "vision_tower.vision_model.*"
//             (and the names transformers >= 4.52 uses inside the model, "model.language_model.*" etc., when read).
enum class HfLayout { kLlavaV1, kLlavaHf };
HfLayout ParseHfLayout(const std::string& name);  // "llava-v1" | "llava-hf"; ConfigError otherwise

// Our parameter name (MultimodalModel::named_parameters) -> the LLaVA v1 tensor name, the one training checkpoints
// use. How a tensor is split over TP is not a matter of its name: the layers declare it (TpPlacements).
std::string HfTensorName(const std::string& param_name);
// The names a parameter may have in `layout`, the one export writes first.
std::vector<std::string> HfTensorNames(const std::string& param_name, HfLayout layout);

struct HfLoadOptions {
  // A CLIP vision checkpoint ("vision_model.*" names) for when the tower is not inside the main checkpoint.
  std::string vision_checkpoint;
  // Keep the random projector when the checkpoint has none (LLaVA stage 1 starts from a plain Vicuna).
  bool allow_missing_projector = false;
  // Load the decoder only (a plain LlamaForCausalLM): the tower and projector keep their initial values.
  bool text_only = false;
};

// Copies every parameter's slice from `dir` (model.safetensors or an index + shards), in either layout (told apart by
// the tensor names). Throws CheckpointError naming file, tensor, expected and found for missing, unexpected and
// mis-shaped tensors and bad dtypes.
void LoadHfCheckpoint(MultimodalModelImpl& model, const std::string& dir, const HfLoadOptions& options = {});

// Every parameter, TP slices merged, under its HF name (a collective over the model's TP group).
checkpoint::NamedTensors GatherHfTensors(MultimodalModelImpl& model, torch::ScalarType dtype = torch::kFloat32,
                                         HfLayout layout = HfLayout::kLlavaV1);

struct HfExportOptions {
  int64_t max_shard_bytes = 5LL << 30;  // larger models are sharded with an index, as HF does
  torch::ScalarType dtype = torch::kFloat32;
  HfLayout layout = HfLayout::kLlavaV1;  // names and config.json (ModelConfig::ToJson or ToLlavaHfJson)
};

// Writes config.json + safetensors into `out_dir` when `write`; every TP rank must call it (it gathers).
void ExportHfCheckpoint(MultimodalModelImpl& model, const std::string& out_dir, bool write,
                        const HfExportOptions& options = {});

}  // namespace lcl::model
