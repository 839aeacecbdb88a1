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

std::string Where(const std::string& origin, const char* scope, const char* key) { return origin + ": " + scope + key; }

// A string field that must be one of `allowed` when present; refused otherwise, naming field and value.
void ExpectOneOf(const json& j, const char* key, const std::vector<std::string>& allowed, const std::string& origin,
                 const char* scope, const std::string& why) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return;
  const std::string value = it->is_string() ? it->get<std::string>() : it->dump();
  for (const auto& a : allowed) {
    if (value == a) return;
  }
  throw ConfigError(Where(origin, scope, key) + "='" + value + "' is not supported; " + why);
}

// A field that must hold `expected` when present (a switch lcl implements one way only).
void ExpectValue(const json& j, const char* key, const json& expected, const std::string& origin, const char* scope,
                 const std::string& why) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null() || *it == expected) return;
  throw ConfigError(Where(origin, scope, key) + "=" + it->dump() + " is not supported; " + why);
}

// The storage dtype (HF `torch_dtype`, `dtype` since transformers 5): lcl converts the weights on load to the run's
// compute dtype, so any floating dtype it can read is fine.
void ExpectFloatDtype(const json& j, const std::string& origin, const char* scope) {
  for (const char* key : {"torch_dtype", "dtype"}) {
    ExpectOneOf(j, key, {"float32", "bfloat16", "float16", "float64"}, origin, scope,
                "lcl reads F32, BF16 and F16 weights; convert the checkpoint to one of float32, bfloat16, float16");
  }
}

// RoPE: rope_theta at the top level (transformers < 5) or in rope_parameters (transformers 5); any rope type other
// than the default (linear, dynamic, yarn, llama3 scaling) is refused, as is the older rope_scaling with a value.
void ReadRope(const json& j, LlamaConfig* c, const std::string& origin) {
  ReadField(j, "rope_theta", &c->rope_theta, origin);
  for (const char* key : {"rope_parameters", "rope_scaling"}) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_object()) throw ConfigError(Where(origin, "", key) + "=" + it->dump() + " must be an object");
    std::string type = "default";
    ReadField(*it, "rope_type", &type, origin);
    ReadField(*it, "type", &type, origin);
    if (type != "default") {
      throw ConfigError(Where(origin, "", key) + "=" + it->dump() + " (rope_type '" + type +
                        "') is not supported; lcl implements plain RoPE (rope_type 'default' with rope_theta)");
    }
    ReadField(*it, "rope_theta", &c->rope_theta, origin);
  }
}

// LLaVA v1's mm_hidden_size is the projector's input width: the tower's, once the tower's shape is known (from
// vision_config, or from the separate CLIP checkpoint's config.json).
void CheckMmHiddenSize(const json& j, const ClipVisionConfig& vision, const std::string& origin) {
  int mm_hidden = vision.hidden_size;
  ReadField(j, "mm_hidden_size", &mm_hidden, origin);
  if (mm_hidden != vision.hidden_size) {
    throw ConfigError(origin + ": mm_hidden_size=" + std::to_string(mm_hidden) +
                      " but the vision tower's hidden_size is " + std::to_string(vision.hidden_size) +
                      "; the projector input must be the tower's width (is the tower's CLIP checkpoint given?)");
  }
}

LlamaConfig LlamaFromJson(const json& j, const std::string& origin) {
  LlamaConfig c;
  // Architectures whose config.json looks like LLaMA's but whose model is not (Mistral's sliding window, Qwen2's
  // biases and window, Gemma's norms) must not load as a wrong LLaMA.
  ExpectOneOf(j, "model_type", {"llama", "llava", "llava_llama"}, origin, "",
              "lcl implements LLaMA decoders (model_type llama, or a LLaVA config around one)");
  ReadField(j, "vocab_size", &c.vocab_size, origin);
  ReadField(j, "hidden_size", &c.hidden_size, origin);
  ReadField(j, "intermediate_size", &c.intermediate_size, origin);
  ReadField(j, "num_hidden_layers", &c.num_hidden_layers, origin);
  ReadField(j, "num_attention_heads", &c.num_attention_heads, origin);
  c.num_key_value_heads = c.num_attention_heads;  // HF default when the key is absent
  ReadField(j, "num_key_value_heads", &c.num_key_value_heads, origin);
  ReadField(j, "max_position_embeddings", &c.max_position_embeddings, origin);
  ReadField(j, "rms_norm_eps", &c.rms_norm_eps, origin);
  ReadField(j, "tie_word_embeddings", &c.tie_word_embeddings, origin);
  ReadField(j, "attention_bias", &c.attention_bias, origin);
  ReadField(j, "mlp_bias", &c.mlp_bias, origin);
  ReadField(j, "head_dim", &c.explicit_head_dim, origin);
  if (c.num_attention_heads > 0 && c.explicit_head_dim * c.num_attention_heads == c.hidden_size) {
    c.explicit_head_dim = 0;  // the derived value: keep configs that only restate it equal to those without it
  }
  ReadRope(j, &c, origin);
  ExpectOneOf(j, "hidden_act", {"silu"}, origin, "",
              "LLaMA's MLP is SwiGLU (hidden_act silu); a model with another activation is not a LLaMA lcl can run");
  ExpectValue(j, "attention_dropout", 0.0, origin, "",
              "lcl trains without attention dropout (as LLaMA and LLaVA do); set it to 0.0");
  ExpectValue(j, "sliding_window", nullptr, origin, "",
              "lcl's attention is full causal attention; sliding-window models (Mistral) are not supported");
  ExpectFloatDtype(j, origin, "");
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
              {"attention_bias", c.attention_bias},
              {"mlp_bias", c.mlp_bias},
              {"head_dim", c.head_dim()},
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
  ExpectOneOf(j, "model_type", {"clip_vision_model", "clip"}, origin, "vision_config.",
              "lcl's vision tower is CLIP's ViT (SigLIP and other towers are not implemented)");
  ReadField(j, "hidden_size", &c.hidden_size, origin);
  ReadField(j, "intermediate_size", &c.intermediate_size, origin);
  ReadField(j, "num_hidden_layers", &c.num_hidden_layers, origin);
  ReadField(j, "num_attention_heads", &c.num_attention_heads, origin);
  ReadField(j, "image_size", &c.image_size, origin);
  ReadField(j, "patch_size", &c.patch_size, origin);
  ReadField(j, "num_channels", &c.num_channels, origin);
  ReadField(j, "layer_norm_eps", &c.layer_norm_eps, origin);
  ExpectOneOf(j, "hidden_act", {"quick_gelu"}, origin, "vision_config.",
              "lcl's CLIP tower uses quick_gelu, as OpenAI's CLIP and CLIPVisionConfig's default do");
  return c;
}

ModelConfig ModelConfig::FromJson(const json& j, const std::string& origin) {
  if (!j.is_object()) throw ConfigError(origin + ": expected a JSON object at the top level");
  ModelConfig c;
  const bool llava_hf = j.contains("text_config");
  if (llava_hf && !j["text_config"].is_object()) throw ConfigError(origin + ": text_config must be an object");
  c.text = LlamaFromJson(llava_hf ? j["text_config"] : j, origin + (llava_hf ? " text_config" : ""));
  if (llava_hf) {
    ExpectOneOf(j, "model_type", {"llava"}, origin, "", "a config with text_config must be a HF LlavaConfig");
    ExpectFloatDtype(j, origin, "");
    // LlavaConfig keeps its own tie_word_embeddings beside text_config's; they must agree.
    bool top_tie = c.text.tie_word_embeddings;
    ReadField(j, "tie_word_embeddings", &top_tie, origin);
    if (top_tie != c.text.tie_word_embeddings) {
      throw ConfigError(origin + ": tie_word_embeddings=" + (top_tie ? "true" : "false") +
                        " disagrees with text_config.tie_word_embeddings; set both to the same value");
    }
  }
  if (j.contains("vision_config")) {
    if (!j["vision_config"].is_object()) throw ConfigError(origin + ": vision_config must be an object");
    c.vision = ClipVisionConfigFromJson(j["vision_config"], origin);
  }
  ExpectOneOf(j, "mm_projector_type", {"linear", "mlp2x_gelu"}, origin, "",
              "lcl implements LLaVA's linear and mlp2x_gelu projectors");
  ReadField(j, "mm_projector_type", &c.projector_type, origin);
  ExpectOneOf(j, "projector_hidden_act", {"gelu"}, origin, "",
              "the mlp2x_gelu projector (llava-hf's LlavaMultiModalProjector) uses gelu");
  ExpectValue(j, "multimodal_projector_bias", true, origin, "", "lcl's projector layers have biases");
  for (const char* key : {"vision_feature_layer", "mm_vision_select_layer"}) {
    if (j.contains(key) && j[key].is_array()) {
      throw ConfigError(origin + ": " + key + "=" + j[key].dump() +
                        " (several layers concatenated) is not supported; give one layer index");
    }
    ReadField(j, key, &c.vision_feature_layer, origin);
  }
  // The CLS token is dropped from the tower's features (LLaVA's 'patch' / llava-hf's 'default'); keeping it
  // ('cls_patch' / 'full') would change the image token count lcl's prompts are built for.
  ExpectOneOf(j, "mm_vision_select_feature", {"patch"}, origin, "",
              "lcl drops the class token from the tower's features (use 'patch')");
  ExpectOneOf(j, "vision_feature_select_strategy", {"default"}, origin, "",
              "lcl drops the class token from the tower's features (use 'default')");
  if (j.contains("vision_config")) CheckMmHiddenSize(j, c.vision, origin);
  ReadField(j, "image_token_index", &c.image_token_id, origin);
  ReadField(j, "image_token_id", &c.image_token_id, origin);
  ReadField(j, "im_start_token", &c.im_start_token_id, origin);
  ReadField(j, "im_end_token", &c.im_end_token_id, origin);
  if (j.contains("mm_use_im_start_end") && !j["mm_use_im_start_end"].is_null()) {
    bool markers = false;
    ReadField(j, "mm_use_im_start_end", &markers, origin);
    c.use_im_start_end = markers ? 1 : 0;
  }
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

ModelConfig ModelConfig::WithOverrides(const std::vector<std::string>& sets, const std::string& flag,
                                       bool* vocab_set) const {
  nlohmann::json j = ToJson();
  bool mm_hidden_set = false, vision_hidden_set = false;
  for (const std::string& kv : sets) {
    const size_t eq = kv.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == kv.size()) {
      throw ConfigError(flag + " '" + kv + "': expected KEY=VALUE, e.g. " + flag + " num_hidden_layers=2");
    }
    const std::string key = kv.substr(0, eq), text = kv.substr(eq + 1);
    nlohmann::json* obj = &j;
    std::string leaf = key;
    if (key.rfind("vision_config.", 0) == 0) {
      obj = &j["vision_config"];
      leaf = key.substr(std::string("vision_config.").size());
    }
    if (leaf.empty() || !obj->contains(leaf) || (*obj)[leaf].is_object()) {
      std::string known;
      for (const auto& item : j.items()) {
        if (!item.value().is_object()) known += " " + item.key();
      }
      for (const auto& item : j["vision_config"].items()) known += " vision_config." + item.key();
      throw ConfigError(flag + " " + key + ": no such config.json field; the fields are:" + known);
    }
    nlohmann::json value = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (value.is_discarded()) value = text;  // a bare string
    const nlohmann::json& old = (*obj)[leaf];
    const bool same_kind = (old.is_number() && value.is_number()) || (old.is_boolean() && value.is_boolean()) ||
                           (old.is_string() && value.is_string()) || old.is_null();
    if (!same_kind) {
      throw ConfigError(flag + " " + key + "=" + text + ": the field holds " + std::string(old.type_name()) + " (" +
                        old.dump() + " before), not " + value.type_name());
    }
    (*obj)[leaf] = value;
    if (key == "vocab_size" && vocab_set != nullptr) *vocab_set = true;
    if (key == "mm_hidden_size") mm_hidden_set = true;
    if (key == "vision_config.hidden_size") vision_hidden_set = true;
  }
  if (vision_hidden_set && !mm_hidden_set) j["mm_hidden_size"] = j["vision_config"]["hidden_size"];
  return FromJson(j, flag);
}

ModelConfig ModelConfig::FromHfDirectory(const std::string& dir, const std::string& vision_dir) {
  const std::string path = dir + "/config.json";
  ModelConfig c = FromJsonFile(path);
  std::ifstream in(path);
  json j;
  in >> j;  // already parsed once above
  if (!j.contains("vision_config") && !vision_dir.empty()) {
    const std::string vision_path = vision_dir + "/config.json";
    std::ifstream vin(vision_path);
    if (!vin) {
      throw ConfigError(path + " has no vision_config and the vision checkpoint has no config.json (" + vision_path +
                        "); give a HF CLIP checkpoint directory");
    }
    json v;
    try {
      vin >> v;
    } catch (const json::exception& e) {
      throw ConfigError(vision_path + ": not valid JSON (" + e.what() + ")");
    }
    c.vision = ClipVisionConfigFromJson(v, vision_path);
  }
  if (!j.contains("vision_config")) CheckMmHiddenSize(j, c.vision, path);
  return c;
}

json ModelConfig::ToJson() const {
  json j = LlamaToJson(text);
  j["vision_config"] = ClipToJson(vision);
  j["mm_projector_type"] = projector_type;
  j["mm_hidden_size"] = vision.hidden_size;
  j["mm_vision_select_layer"] = vision_feature_layer;
  if (use_im_start_end >= 0) j["mm_use_im_start_end"] = use_im_start_end == 1;  // unknown until a run trains it
  j["image_token_index"] = image_token_id;
  j["im_start_token"] = im_start_token_id;
  j["im_end_token"] = im_end_token_id;
  j["activation_checkpointing"] = activation_checkpointing;
  return j;
}

json ModelConfig::ToLlavaHfJson() const {
  if (projector_type != "mlp2x_gelu") {
    throw ConfigError("mm_projector_type='" + projector_type +
                      "' cannot be written in the llava-hf layout (LlavaMultiModalProjector is two linear layers with "
                      "gelu, lcl's mlp2x_gelu); export with --layout llava-v1");
  }
  json t = LlamaToJson(text);
  t.erase("architectures");
  t.erase("torch_dtype");
  t["model_type"] = "llama";
  json v = ClipToJson(vision);
  json j{{"architectures", {"LlavaForConditionalGeneration"}},
         {"model_type", "llava"},
         {"text_config", t},
         {"vision_config", v},
         {"image_token_index", image_token_id},
         {"image_seq_length", vision.num_patches()},
         {"projector_hidden_act", "gelu"},
         {"multimodal_projector_bias", true},
         {"vision_feature_layer", vision_feature_layer},
         {"vision_feature_select_strategy", "default"},
         {"tie_word_embeddings", text.tie_word_embeddings},
         {"torch_dtype", "float32"},
         // Not LlavaConfig fields (HF keeps them as extra attributes): the span delimiters lcl's prompts use,
         // so that the model reads back exactly.
         {"im_start_token", im_start_token_id},
         {"im_end_token", im_end_token_id},
         {"activation_checkpointing", activation_checkpointing}};
  if (use_im_start_end >= 0) j["mm_use_im_start_end"] = use_im_start_end == 1;
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
  CheckPositive(text.num_attention_heads, "num_attention_heads");
  if (text.explicit_head_dim < 0)
    throw ConfigError("head_dim=" + std::to_string(text.explicit_head_dim) + " must be positive");
  if (text.explicit_head_dim == 0) {
    CheckDivides(text.num_attention_heads, text.hidden_size, "hidden_size",
                 "hidden_size must be num_attention_heads * head_dim (or give head_dim)");
  }
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
