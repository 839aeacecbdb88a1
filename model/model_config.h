// Model hyper-parameters: the LLaMA decoder (Hugging Face LlamaConfig fields), the CLIP vision tower
// (CLIPVisionConfig fields) and the LLaVA glue (projector, feature layer, image token), read from and written to a
// Hugging Face style config.json; plus the named presets tiny | small | llava-7b.
//
//   ModelConfig config = ModelConfig::FromPreset("tiny");
//   config.Validate(/*tp=*/2);                       // throws lcl::ConfigError if heads or vocab do not divide
//   nlohmann::json j = config.ToJson();              // what `lcl model init` writes as config.json
//   ModelConfig again = ModelConfig::FromJsonFile(dir + "/config.json");
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace lcl::model {

// LLaMA / Vicuna decoder (HF LlamaConfig names).
struct LlamaConfig {
  int vocab_size = 32000;
  int hidden_size = 4096;
  int intermediate_size = 11008;
  int num_hidden_layers = 32;
  int num_attention_heads = 32;
  int num_key_value_heads = 32;  // < num_attention_heads: grouped-query attention
  int max_position_embeddings = 4096;
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // biases on q/k/v/o_proj (HF attention_bias)
  bool mlp_bias = false;        // biases on gate/up/down_proj (HF mlp_bias)
  int explicit_head_dim = 0;    // HF head_dim when it is not hidden_size / num_attention_heads; 0 = derived

  int head_dim() const { return explicit_head_dim > 0 ? explicit_head_dim : hidden_size / num_attention_heads; }
};

// CLIP ViT vision tower (HF CLIPVisionConfig names). hidden_act is always quick_gelu (as in OpenAI CLIP).
struct ClipVisionConfig {
  int hidden_size = 1024;
  int intermediate_size = 4096;
  int num_hidden_layers = 24;
  int num_attention_heads = 16;
  int image_size = 224;
  int patch_size = 14;
  int num_channels = 3;
  double layer_norm_eps = 1e-5;

  int head_dim() const { return hidden_size / num_attention_heads; }
  int grid() const { return image_size / patch_size; }
  // Patch tokens per image after the class token is dropped: 256 for 224 px, patch 14.
  int num_patches() const { return grid() * grid(); }
};

struct ModelConfig {
  LlamaConfig text;
  ClipVisionConfig vision;
  // "linear" (LLaVA v1) or "mlp2x_gelu" (LLaVA 1.5). HF key: mm_projector_type.
  std::string projector_type = "mlp2x_gelu";
  // Index into the tower's hidden states (HF convention: 0 = embeddings, -1 = last layer). HF key:
  // mm_vision_select_layer.
  int vision_feature_layer = -2;
  // Token ids of the image placeholders (one per patch) and the span delimiters; -1 = not set. HF keys:
  // image_token_index, im_start_token, im_end_token.
  int image_token_id = -1;
  int im_start_token_id = -1;
  int im_end_token_id = -1;
  // LLaVA's mm_use_im_start_end when config.json says it: whether the prompts the model was trained on wrap each
  // image's patches in im_start / im_end. Unset (-1): config.json does not say. Training refuses a disagreeing
  // data.image_markers.
  int use_im_start_end = -1;
  // Recompute each decoder layer in backward instead of keeping its activations.
  bool activation_checkpointing = false;

  static ModelConfig FromPreset(const std::string& name);  // tiny | small | llava-7b
  static std::vector<std::string> PresetNames();
  // Accepts a LLaVA v1 config.json (LlamaConfig fields at the top level, mm_* keys, an optional "vision_config"
  // object), a HF LlavaConfig ("text_config" + "vision_config", the llava-hf layout), or a plain LlamaConfig. Every
  // field that changes the architecture is honoured or refused with a ConfigError naming field and value (the
  // table is in docs/model.md). `origin` names the file in error messages.
  static ModelConfig FromJson(const nlohmann::json& j, const std::string& origin);
  static ModelConfig FromJsonFile(const std::string& path);
  // A model directory's config.json; when it has no "vision_config" and `vision_dir` (a separate CLIP checkpoint,
  // as LLaVA v1 ships the tower) is given, the tower's shape comes from `vision_dir`/config.json.
  static ModelConfig FromHfDirectory(const std::string& dir, const std::string& vision_dir = "");
  // This config with `KEY=VALUE` overrides applied to its config.json (the LLaVA v1 layout ToJson writes): KEY is a
  // key that file has (`num_hidden_layers`, `vision_config.image_size`), VALUE JSON (a number, true/false, or a bare
  // string). The result is read back by the same FromJson that reads any model directory, so every field is checked
  // as there. `flag` names the option in errors (`--set`); *vocab_set says whether vocab_size was among them.
  ModelConfig WithOverrides(const std::vector<std::string>& sets, const std::string& flag,
                            bool* vocab_set = nullptr) const;
  // LLaVA v1 layout (what `lcl model init` and export write by default).
  nlohmann::json ToJson() const;
  // HF LlavaConfig (LlavaForConditionalGeneration, the llava-hf layout). Throws ConfigError for a model that
  // layout cannot express (a linear projector).
  nlohmann::json ToLlavaHfJson() const;

  // Throws lcl::ConfigError naming the field, the value and what to change when the shapes are inconsistent or
  // do not divide by the tensor-parallel size `tp`.
  void Validate(int tp) const;
  // Vision layers actually run to produce the selected features.
  int VisionLayersUsed() const;
};

// Reads the CLIP vision hyper-parameters from a CLIPVisionConfig or CLIPConfig ("vision_config") json.
ClipVisionConfig ClipVisionConfigFromJson(const nlohmann::json& j, const std::string& origin);

}  // namespace lcl::model
