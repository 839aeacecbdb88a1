// config.json fields that change the architecture: each is honoured (the model built from it differs as HF's does)
// or refused with a ConfigError naming field and value. One test per field; tests/model/hf_parity_test.py checks the
// honoured ones against Hugging Face's own classes.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cluster/errors.h"
#include "model/model_config.h"
#include "model/multimodal_model.h"
#include "tests/test_util.h"

namespace lcl::model {
namespace {

using nlohmann::json;

// A plain transformers 5 LlamaConfig as save_pretrained writes it (rope_theta inside rope_parameters).
json Llama() {
  return json::parse(R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 64,
      "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
      "num_key_value_heads": 2, "hidden_act": "silu", "max_position_embeddings": 128, "rms_norm_eps": 1e-6,
      "tie_word_embeddings": false, "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
      "attention_bias": false, "attention_dropout": 0.0, "mlp_bias": false, "head_dim": 8, "dtype": "float32",
      "pretraining_tp": 1})");
}

// A llava-hf LlavaConfig around it, with a 16 px CLIP tower.
json LlavaHf() {
  json j = json::parse(R"({"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava",
      "image_token_index": 63, "projector_hidden_act": "gelu", "vision_feature_layer": -2,
      "vision_feature_select_strategy": "default", "multimodal_projector_bias": true, "tie_word_embeddings": false,
      "vision_config": {"model_type": "clip_vision_model", "hidden_size": 24, "intermediate_size": 40,
        "num_hidden_layers": 3, "num_attention_heads": 2, "image_size": 16, "patch_size": 8,
        "hidden_act": "quick_gelu"}})");
  j["text_config"] = Llama();
  return j;
}

ModelConfig Read(const json& j) { return ModelConfig::FromJson(j, "config.json"); }

std::vector<std::string> ParamNames(const ModelConfig& c) {
  MultimodalModel m(c, TpGroup{});
  std::vector<std::string> names;
  for (const auto& p : m->named_parameters()) names.push_back(p.key());
  return names;
}

bool Has(const std::vector<std::string>& names, const std::string& name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

// ---- honoured --------------------------------------------------------------------------------------------------

TEST(ModelConfigField, RopeThetaIsReadFromRopeParametersAndFromTheTopLevel) {
  json j = Llama();
  j["rope_parameters"]["rope_theta"] = 500000.0;
  EXPECT_EQ(Read(j).text.rope_theta, 500000.0);  // transformers 5
  j.erase("rope_parameters");
  j["rope_theta"] = 250000.0;
  EXPECT_EQ(Read(j).text.rope_theta, 250000.0);  // transformers 4
}

TEST(ModelConfigField, RmsNormEpsIsHonoured) {
  json j = Llama();
  j["rms_norm_eps"] = 1e-6;
  EXPECT_EQ(Read(j).text.rms_norm_eps, 1e-6);
}

TEST(ModelConfigField, HeadDimOtherThanHiddenOverHeadsShapesTheProjections) {
  json j = Llama();
  j["head_dim"] = 16;  // 4 heads x 16 = 64 != hidden 32
  ModelConfig c = Read(j);
  EXPECT_EQ(c.text.head_dim(), 16);
  c.vision = ClipVisionConfigFromJson(LlavaHf()["vision_config"], "v");
  MultimodalModel m(c, TpGroup{});
  auto params = m->named_parameters();
  EXPECT_EQ(params["language_model.model.layers.0.self_attn.q_proj.weight"].sizes(), (std::vector<int64_t>{64, 32}));
  EXPECT_EQ(params["language_model.model.layers.0.self_attn.k_proj.weight"].sizes(), (std::vector<int64_t>{32, 32}));
  EXPECT_EQ(params["language_model.model.layers.0.self_attn.o_proj.weight"].sizes(), (std::vector<int64_t>{32, 64}));
  // Restating the derived value is the same config as leaving it out.
  EXPECT_EQ(Read(Llama()).ToJson(), [] {
    json k = Llama();
    k.erase("head_dim");
    return Read(k).ToJson();
  }());
}

TEST(ModelConfigField, AttentionBiasAddsBiasesToQkvAndO) {
  json j = Llama();
  j["attention_bias"] = true;
  ModelConfig c = Read(j);
  c.vision = ClipVisionConfigFromJson(LlavaHf()["vision_config"], "v");
  auto names = ParamNames(c);
  for (const char* p : {"q_proj", "k_proj", "v_proj", "o_proj"}) {
    EXPECT_TRUE(Has(names, std::string("language_model.model.layers.1.self_attn.") + p + ".bias")) << p;
  }
  EXPECT_FALSE(Has(names, "language_model.model.layers.1.mlp.up_proj.bias"));
}

TEST(ModelConfigField, MlpBiasAddsBiasesToGateUpAndDown) {
  json j = Llama();
  j["mlp_bias"] = true;
  ModelConfig c = Read(j);
  c.vision = ClipVisionConfigFromJson(LlavaHf()["vision_config"], "v");
  auto names = ParamNames(c);
  for (const char* p : {"gate_proj", "up_proj", "down_proj"}) {
    EXPECT_TRUE(Has(names, std::string("language_model.model.layers.0.mlp.") + p + ".bias")) << p;
  }
  EXPECT_FALSE(Has(names, "language_model.model.layers.0.self_attn.q_proj.bias"));
}

TEST(ModelConfigField, TieWordEmbeddingsDropsTheLmHead) {
  json j = Llama();
  j["tie_word_embeddings"] = true;
  ModelConfig c = Read(j);
  c.vision = ClipVisionConfigFromJson(LlavaHf()["vision_config"], "v");
  EXPECT_FALSE(Has(ParamNames(c), "language_model.lm_head.weight"));
  c.text.tie_word_embeddings = false;
  EXPECT_TRUE(Has(ParamNames(c), "language_model.lm_head.weight"));
}

TEST(ModelConfigField, MmUseImStartEndIsReadAndWrittenBack) {
  json j = Llama();
  EXPECT_EQ(Read(j).use_im_start_end, -1);  // not said: no constraint on the prompts
  j["mm_use_im_start_end"] = false;
  ModelConfig c = Read(j);
  EXPECT_EQ(c.use_im_start_end, 0);
  EXPECT_EQ(c.ToJson()["mm_use_im_start_end"], false);
  j["mm_use_im_start_end"] = true;
  EXPECT_EQ(Read(j).use_im_start_end, 1);
}

TEST(ModelConfigField, TorchDtypeAcceptsTheFloatDtypesLclConverts) {
  for (const char* key : {"torch_dtype", "dtype"}) {
    for (const char* dtype : {"float32", "bfloat16", "float16"}) {
      json j = Llama();
      j[key] = dtype;
      EXPECT_NO_THROW(Read(j)) << key << "=" << dtype;
    }
  }
}

TEST(ModelConfigField, VisionFeatureLayerIsHonouredInBothSpellings) {
  json j = LlavaHf();
  j["vision_feature_layer"] = -1;
  EXPECT_EQ(Read(j).VisionLayersUsed(), 3);
  json v1 = Llama();
  v1["mm_vision_select_layer"] = -2;
  EXPECT_EQ(Read(v1).vision_feature_layer, -2);
}

TEST(ModelConfigField, LlavaHfConfigRoundTrips) {
  ModelConfig c = Read(LlavaHf());
  EXPECT_EQ(c.image_token_id, 63);
  EXPECT_EQ(c.vision.image_size, 16);
  EXPECT_EQ(c.text.num_key_value_heads, 2);
  EXPECT_EQ(Read(c.ToLlavaHfJson()).ToJson(), c.ToJson());
}

// ---- refused ---------------------------------------------------------------------------------------------------

struct Refusal {
  std::string name;                 // the test's name
  std::string patch;                // a JSON merge patch applied to the llava-hf config
  std::vector<std::string> expect;  // what the message must name (field and value)
};

class ModelConfigRefusal : public ::testing::TestWithParam<Refusal> {};

TEST_P(ModelConfigRefusal, IsAConfigErrorNamingFieldAndValue) {
  json j = LlavaHf();
  j.merge_patch(json::parse(GetParam().patch));
  std::vector<std::string> parts = GetParam().expect;
  parts.push_back("config.json");
  lcl::testing::ExpectErrorMentions<ConfigError>([&] { Read(j).Validate(1); }, parts);
}

INSTANTIATE_TEST_SUITE_P(
    Fields, ModelConfigRefusal,
    ::testing::Values(
        Refusal{"HiddenActGelu", R"({"text_config": {"hidden_act": "gelu"}})", {"hidden_act", "gelu"}},
        Refusal{"ModelTypeMistral", R"({"text_config": {"model_type": "mistral"}})", {"model_type", "mistral"}},
        Refusal{"SlidingWindow", R"({"text_config": {"sliding_window": 4096}})", {"sliding_window", "4096"}},
        Refusal{"RopeTypeLinear",
                R"({"text_config": {"rope_parameters": {"rope_type": "linear", "factor": 2.0}}})",
                {"rope_parameters", "linear"}},
        Refusal{"RopeScalingDynamic",
                R"({"text_config": {"rope_scaling": {"type": "dynamic", "factor": 2.0}}})",
                {"rope_scaling", "dynamic"}},
        Refusal{"AttentionDropout", R"({"text_config": {"attention_dropout": 0.1}})", {"attention_dropout", "0.1"}},
        Refusal{"TorchDtypeInt8", R"({"text_config": {"torch_dtype": "int8"}})", {"torch_dtype", "int8"}},
        Refusal{"VisionHiddenActGelu",
                R"({"vision_config": {"hidden_act": "gelu"}})",
                {"vision_config.hidden_act", "gelu"}},
        Refusal{"VisionModelTypeSiglip",
                R"({"vision_config": {"model_type": "siglip_vision_model"}})",
                {"vision_config.model_type", "siglip_vision_model"}},
        Refusal{"SelectStrategyFull",
                R"({"vision_feature_select_strategy": "full"})",
                {"vision_feature_select_strategy", "full"}},
        Refusal{"SelectFeatureClsPatch",
                R"({"mm_vision_select_feature": "cls_patch"})",
                {"mm_vision_select_feature", "cls_patch"}},
        Refusal{"FeatureLayerList", R"({"vision_feature_layer": [-2, -5]})", {"vision_feature_layer", "[-2,-5]"}},
        Refusal{"ProjectorActRelu", R"({"projector_hidden_act": "relu"})", {"projector_hidden_act", "relu"}},
        Refusal{
            "ProjectorWithoutBias", R"({"multimodal_projector_bias": false})", {"multimodal_projector_bias", "false"}},
        Refusal{"MmHiddenSizeMismatch", R"({"mm_hidden_size": 1024})", {"mm_hidden_size=1024", "24"}},
        Refusal{"TiedDisagreement", R"({"tie_word_embeddings": true})", {"tie_word_embeddings=true"}},
        Refusal{"ProjectorTypeUnknown", R"({"mm_projector_type": "qformer"})", {"mm_projector_type", "qformer"}},
        Refusal{"TopModelTypeNotLlava", R"({"model_type": "idefics"})", {"model_type", "idefics"}}),
    [](const ::testing::TestParamInfo<Refusal>& info) { return info.param.name; });

}  // namespace
}  // namespace lcl::model
