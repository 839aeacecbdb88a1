// ModelConfig: presets, Hugging Face config.json reading/writing, validation against the TP size.
#include "model/model_config.h"

#include <fstream>
#include <sstream>
#include <type_traits>

#include "cluster/errors.h"

namespace lcl::model {
namespace {

using nlohmann::json;

// Reads `key` into `out` when present; a present key of the wrong type is a ConfigError naming file and key.
template <typename T>
void ReadField(const json& j, const char* key, T* out, const std::string& origin) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return;
  try {
    *out = it->get<T>();
  } catch (const json::exception& e) {
    throw ConfigError(origin + ": field '" + key + "' has the wrong type (" + it->dump() + "); expected a " +
                      (std::is_same_v<T, std::string> ? "string" : "number/bool"));
  }
}

LlamaConfig LlamaFromJson(const json& j, const std::string& origin) {
  LlamaConfig c;
  ReadField(j, "vocab_size", &c.vocab_size, origin);
  ReadField(j, "hidden_size", &c.hidden_size, origin);
  ReadField(j, "intermediate_size", &c.intermediate_size, origin);
  ReadField(j, "num_hidden_layers", &c.num_hidden_layers, origin);
  ReadField(j, "num_attention_heads", &c.num_attention_heads, origin);
  c.num_key_value_heads = c.num_attention_heads;  // HF default when the key is absent
  ReadField(j, "num_key_value_heads", &c.num_key_value_heads, origin);
  ReadField(j, "max_position_embeddings", &c.max_position_embeddings, origin);
  ReadField(j, "rms_norm_eps", &c.rms_norm_eps, origin);
  ReadField(j, "rope_theta", &c.rope_theta, origin);
  ReadField(j, "tie_word_embeddings", &c.tie_word_embeddings, origin);
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    throw ConfigError(origin + ": rope_scaling=" + j["rope_scaling"].dump() +
                      " is not supported; remove it (plain RoPE with rope_theta only)");
  }
  return c;
}

json LlamaToJson(const LlamaConfig& c) {
  return json{{"architectures", {"LlavaLlamaForCausalLM"}},
              {"model_type", "llava"},
              {"vocab_size", c.vocab_size},
              {"hidden_size", c.hidden_size},
              {"intermediate_size", c.intermediate_size},
              {"num_hidden_layers", c.num_hidden_layers},
              {"num_attention_heads", c.num_attention_heads},
              {"num_key_value_heads", c.num_key_value_heads},
              {"max_position_embeddings", c.max_position_embeddings},
              {"rms_norm_eps", c.rms_norm_eps},
              {"rope_theta", c.rope_theta},
              {"tie_word_embeddings", c.tie_word_embeddings},
              {"hidden_act", "silu"},
              {"torch_dtype", "float32"}};
}

json ClipToJson(const ClipVisionConfig& c) {
  return json{{"model_type", "clip_vision_model"},
              {"hidden_size", c.hidden_size},
              {"intermediate_size", c.intermediate_size},
              {"num_hidden_layers", c.num_hidden_layers},
              {"num_attention_heads", c.num_attention_heads},
              {"image_size", c.image_size},
              {"patch_size", c.patch_size},
              {"num_channels", c.num_channels},
              {"layer_norm_eps", c.layer_norm_eps},
              {"hidden_act", "quick_gelu"}};
}

void CheckDivides(int divisor, int value, const std::string& what, const std::string& fix) {
  if (divisor <= 0 || value % divisor != 0) {
    std::ostringstream m;
    m << what << "=" << value << " is not divisible by " << divisor << "; " << fix;
    throw ConfigError(m.str());
  }
}

void CheckPositive(int value, const std::string& what) {
  if (value <= 0) throw ConfigError(what + "=" + std::to_string(value) + " must be positive");
}

// The delimiter/placeholder ids follow the SentencePiece pieces (sampler::Tokenizer's layout: im_start,
// im_end, im_patch), as LLaVA v1 appends them. `lcl model init` re-reads them from the trained tokenizer.
void SetImageTokensAtTop(ModelConfig* c) {
  c->im_start_token_id = c->text.vocab_size - 3;
  c->im_end_token_id = c->text.vocab_size - 2;
  c->image_token_id = c->text.vocab_size - 1;
}

}  // namespace

std::vector<std::string> ModelConfig::PresetNames() { return {"tiny", "small", "llava-7b"}; }

ModelConfig ModelConfig::FromPreset(const std::string& name) {
  ModelConfig c;
  if (name == "tiny") {
    // Trains in minutes on 2 CPU cores: 4 layers of width 128, 4 patches per 64 px image (few image tokens per
    // image: shorter episodes, and fewer positions to match when linking a label to an image).
    c.text = LlamaConfig{/*vocab_size=*/1024,
                         /*hidden_size=*/128,
                         /*intermediate_size=*/352,
                         /*num_hidden_layers=*/4,
                         /*num_attention_heads=*/4,
                         /*num_key_value_heads=*/4,
                         /*max_position_embeddings=*/2048,
                         /*rms_norm_eps=*/1e-5,
                         /*rope_theta=*/10000.0,
                         /*tie_word_embeddings=*/false};
    c.vision =
        ClipVisionConfig{/*hidden_size=*/64,        /*intermediate_size=*/256, /*num_hidden_layers=*/3,
                         /*num_attention_heads=*/4, /*image_size=*/64,         /*patch_size=*/32,
                         /*num_channels=*/3,        /*layer_norm_eps=*/1e-5};
    SetImageTokensAtTop(&c);
  } else if (name == "small") {
    c.text = LlamaConfig{4096, 512, 1376, 8, 8, 4, 4096, 1e-5, 10000.0, false};
    c.vision = ClipVisionConfig{256, 1024, 6, 4, 112, 14, 3, 1e-5};  // 64 patches per image
    SetImageTokensAtTop(&c);
  } else if (name == "llava-7b") {
    // Vicuna-7B v1.5 + CLIP ViT-L/14 at 224 px (256 patches), LLaVA-1.5 MLP projector. The three image tokens
    // are appended to the 32000-piece LLaMA vocabulary; 32064 keeps the vocabulary divisible by tp <= 64.
    c.text = LlamaConfig{32064, 4096, 11008, 32, 32, 32, 4096, 1e-5, 10000.0, false};
    c.vision = ClipVisionConfig{1024, 4096, 24, 16, 224, 14, 3, 1e-5};
    c.im_start_token_id = 32000;
    c.im_end_token_id = 32001;
    c.image_token_id = 32002;
  } else {
    throw ConfigError("unknown model preset '" + name + "'; choose one of tiny, small, llava-7b");
  }
  c.projector_type = "mlp2x_gelu";
  c.vision_feature_layer = -2;
  return c;
}

ClipVisionConfig ClipVisionConfigFromJson(const json& in, const std::string& origin) {
  const json& j = in.contains("vision_config") ? in["vision_config"] : in;
  ClipVisionConfig c;
  ReadField(j, "hidden_size", &c.hidden_size, origin);
  ReadField(j, "intermediate_size", &c.intermediate_size, origin);
  ReadField(j, "num_hidden_layers", &c.num_hidden_layers, origin);
  ReadField(j, "num_attention_heads", &c.num_attention_heads, origin);
  ReadField(j, "image_size", &c.image_size, origin);
  ReadField(j, "patch_size", &c.patch_size, origin);
  ReadField(j, "num_channels", &c.num_channels, origin);
  ReadField(j, "layer_norm_eps", &c.layer_norm_eps, origin);
  std::string act = "quick_gelu";
  ReadField(j, "hidden_act", &act, origin);
  if (act != "quick_gelu") {
    throw ConfigError(origin + ": vision hidden_act='" + act + "' is not supported; expected quick_gelu");
  }
  return c;
}

ModelConfig ModelConfig::FromJson(const json& j, const std::string& origin) {
  if (!j.is_object()) throw ConfigError(origin + ": expected a JSON object at the top level");
  ModelConfig c;
  c.text = LlamaFromJson(j.contains("text_config") ? j["text_config"] : j, origin);
  if (j.contains("vision_config")) c.vision = ClipVisionConfigFromJson(j["vision_config"], origin);
  ReadField(j, "mm_projector_type", &c.projector_type, origin);
  ReadField(j, "mm_vision_select_layer", &c.vision_feature_layer, origin);
  ReadField(j, "vision_feature_layer", &c.vision_feature_layer, origin);
  ReadField(j, "image_token_index", &c.image_token_id, origin);
  ReadField(j, "im_start_token", &c.im_start_token_id, origin);
  ReadField(j, "im_end_token", &c.im_end_token_id, origin);
  ReadField(j, "activation_checkpointing", &c.activation_checkpointing, origin);
  return c;
}

ModelConfig ModelConfig::FromJsonFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError("cannot open model config '" + path + "'; expected a HF config.json");
  json j;
  try {
    in >> j;
  } catch (const json::exception& e) {
    throw ConfigError(path + ": not valid JSON (" + e.what() + ")");
  }
  return FromJson(j, path);
}

json ModelConfig::ToJson() const {
  json j = LlamaToJson(text);
  j["vision_config"] = ClipToJson(vision);
  j["mm_projector_type"] = projector_type;
  j["mm_hidden_size"] = vision.hidden_size;
  j["mm_vision_select_layer"] = vision_feature_layer;
  j["mm_use_im_start_end"] = im_start_token_id >= 0;
  j["image_token_index"] = image_token_id;
  j["im_start_token"] = im_start_token_id;
  j["im_end_token"] = im_end_token_id;
  j["activation_checkpointing"] = activation_checkpointing;
  return j;
}

int ModelConfig::VisionLayersUsed() const {
  const int n = vision.num_hidden_layers;
  return vision_feature_layer >= 0 ? vision_feature_layer : n + 1 + vision_feature_layer;
}

void ModelConfig::Validate(int tp) const {
  CheckPositive(tp, "tp");
  CheckPositive(text.vocab_size, "vocab_size");
  CheckPositive(text.num_hidden_layers, "num_hidden_layers");
  CheckPositive(text.num_key_value_heads, "num_key_value_heads");
  CheckDivides(text.num_attention_heads, text.hidden_size, "hidden_size",
               "hidden_size must be num_attention_heads * head_dim");
  CheckDivides(text.num_key_value_heads, text.num_attention_heads, "num_attention_heads",
               "grouped-query attention needs num_attention_heads to be a multiple of num_key_value_heads");
  if (text.head_dim() % 2 != 0) {
    throw ConfigError("head_dim=" + std::to_string(text.head_dim()) + " must be even for rotary embeddings");
  }
  const std::string tp_fix = "choose a tensor-parallel size tp that divides it (tp=" + std::to_string(tp) + ")";
  CheckDivides(tp, text.num_attention_heads, "num_attention_heads", tp_fix);
  CheckDivides(tp, text.num_key_value_heads, "num_key_value_heads", tp_fix);
  CheckDivides(tp, text.vocab_size, "vocab_size", tp_fix + " or pad the vocabulary to a multiple of tp");
  CheckDivides(tp, text.intermediate_size, "intermediate_size", tp_fix);
  CheckDivides(vision.num_attention_heads, vision.hidden_size, "vision_config.hidden_size",
               "it must be num_attention_heads * head_dim");
  CheckDivides(vision.patch_size, vision.image_size, "vision_config.image_size",
               "image_size must be a multiple of patch_size");
  if (projector_type != "linear" && projector_type != "mlp2x_gelu") {
    throw ConfigError("mm_projector_type='" + projector_type + "' is not supported; use linear or mlp2x_gelu");
  }
  const int used = VisionLayersUsed();
  if (used < 0 || used > vision.num_hidden_layers) {
    throw ConfigError("mm_vision_select_layer=" + std::to_string(vision_feature_layer) + " is out of range for " +
                      std::to_string(vision.num_hidden_layers) + " vision layers; use -" +
                      std::to_string(vision.num_hidden_layers + 1) + ".." + std::to_string(vision.num_hidden_layers));
  }
}

}  // namespace lcl::model
