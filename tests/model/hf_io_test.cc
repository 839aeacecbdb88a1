// Hugging Face import/export: HF tensor names, a LLaVA checkpoint plus a separate CLIP checkpoint (sharded, bf16),
// export -> import -> export bitwise identical, and clear errors for missing, unexpected and mis-shaped tensors.
#include "model/hf_io.h"

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <set>

#include "cluster/errors.h"
#include "tests/test_util.h"
#include "tests/model/test_configs.h"

namespace lcl::model {
namespace {

using lcl::testing::ExpectErrorMentions;
using lcl::testing::TempDir;
using testing::TestConfig;

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void ExpectSameParameters(MultimodalModelImpl& a, MultimodalModelImpl& b) {
  auto pb = b.named_parameters();
  for (const auto& p : a.named_parameters()) EXPECT_TRUE(torch::equal(p.value(), pb[p.key()])) << p.key();
}

TEST(HfIo, UsesHuggingFaceTensorNames) {
  MultimodalModel model(TestConfig(), TpGroup{});
  std::set<std::string> names;
  for (const auto& [name, t] : GatherHfTensors(*model)) names.insert(name);
  for (const char* expected :
       {"model.embed_tokens.weight", "model.layers.1.self_attn.k_proj.weight", "model.layers.0.mlp.down_proj.weight",
        "model.layers.1.post_attention_layernorm.weight", "model.norm.weight", "lm_head.weight",
        "model.mm_projector.0.weight", "model.mm_projector.2.bias",
        "model.vision_tower.vision_tower.vision_model.embeddings.class_embedding",
        "model.vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight",
        "model.vision_tower.vision_tower.vision_model.pre_layrnorm.bias",
        "model.vision_tower.vision_tower.vision_model.encoder.layers.2.mlp.fc2.bias",
        "model.vision_tower.vision_tower.vision_model.post_layernorm.weight"}) {
    EXPECT_EQ(names.count(expected), 1u) << expected;
  }
}

TEST(HfIo, ImportsShardedBf16LlavaCheckpointWithSeparateClipCheckpoint) {
  torch::manual_seed(30);
  ModelConfig c = TestConfig();
  MultimodalModel source(c, TpGroup{});
  checkpoint::NamedTensors llava, clip;
  const std::string prefix = "model.vision_tower.vision_tower.";
  for (const auto& [name, t] : GatherHfTensors(*source, torch::kBFloat16)) {
    if (name.rfind(prefix, 0) == 0) {
      clip.emplace_back(name.substr(prefix.size()), t);
    } else {
      llava.emplace_back(name, t);
    }
  }
  clip.emplace_back("vision_model.embeddings.position_ids", torch::arange(5).unsqueeze(0));  // an HF buffer
  llava.emplace_back("model.layers.0.self_attn.rotary_emb.inv_freq", torch::ones({4}));      // old HF buffer
  TempDir llava_dir("hf_llava"), clip_dir("hf_clip");
  EXPECT_GT(checkpoint::WriteSafetensorsCheckpoint(llava_dir.path(), llava, /*max_shard_bytes=*/4096).size(), 1u);
  checkpoint::WriteSafetensorsCheckpoint(clip_dir.path(), clip, 1 << 30);

  torch::manual_seed(31);
  MultimodalModel loaded(c, TpGroup{});
  LoadHfCheckpoint(*loaded, llava_dir.path(), {clip_dir.path(), false});
  auto want = source->named_parameters();
  for (const auto& p : loaded->named_parameters()) {
    EXPECT_TRUE(torch::equal(p.value(), want[p.key()].to(torch::kBFloat16).to(torch::kFloat32))) << p.key();
  }
  ExpectErrorMentions<CheckpointError>([&] { LoadHfCheckpoint(*loaded, llava_dir.path()); },
                                       {"missing tensor", "vision_model", "CLIP"});
}

TEST(HfIo, ExportImportExportIsBitwiseIdentical) {
  torch::manual_seed(32);
  ModelConfig c = TestConfig();
  MultimodalModel a(c, TpGroup{});
  TempDir first("hf_rt1"), second("hf_rt2");
  ExportHfCheckpoint(*a, first.path(), /*write=*/true);
  EXPECT_EQ(ModelConfig::FromJsonFile(first / "config.json").ToJson(), c.ToJson());
  torch::manual_seed(33);
  MultimodalModel b(ModelConfig::FromJsonFile(first / "config.json"), TpGroup{});
  LoadHfCheckpoint(*b, first.path());
  ExpectSameParameters(*a, *b);
  ExportHfCheckpoint(*b, second.path(), true);
  EXPECT_EQ(Slurp(first / "model.safetensors"), Slurp(second / "model.safetensors"));
  EXPECT_EQ(Slurp(first / "config.json"), Slurp(second / "config.json"));
}

TEST(HfIo, MissingUnexpectedAndMisShapedTensorsAreClearErrors) {
  ModelConfig c = TestConfig();
  MultimodalModel model(c, TpGroup{});
  checkpoint::NamedTensors all = GatherHfTensors(*model);
  TempDir dir("hf_bad");
  const std::string file = dir / "model.safetensors";
  auto load = [&] { LoadHfCheckpoint(*model, dir.path()); };

  checkpoint::NamedTensors missing(all.begin() + 1, all.end());
  checkpoint::WriteSafetensors(file, missing);
  ExpectErrorMentions<CheckpointError>(load, {dir.path(), "missing tensor '" + all.front().first + "'"});

  checkpoint::NamedTensors extra = all;
  extra.emplace_back("model.layers.9.mlp.up_proj.weight", torch::zeros({2}));
  checkpoint::WriteSafetensors(file, extra);
  ExpectErrorMentions<CheckpointError>(load, {file, "unexpected tensor 'model.layers.9.mlp.up_proj.weight'"});

  checkpoint::NamedTensors shaped = all;
  for (auto& [name, t] : shaped) {
    if (name == "model.layers.1.mlp.gate_proj.weight") t = torch::zeros({40, 32});
  }
  checkpoint::WriteSafetensors(file, shaped);
  ExpectErrorMentions<CheckpointError>(load, {file, "model.layers.1.mlp.gate_proj.weight", "[40, 32]", "[48, 32]"});

  checkpoint::NamedTensors ints = all;
  ints[0].second = ints[0].second.to(torch::kInt64);
  checkpoint::WriteSafetensors(file, ints);
  ExpectErrorMentions<CheckpointError>(load, {file, ints[0].first, "I64"});
  // The projector may be absent when asked (LLaVA stage 1 from a plain LLaMA).
  checkpoint::NamedTensors no_proj;
  for (const auto& nt : all) {
    if (nt.first.find("mm_projector") == std::string::npos) no_proj.push_back(nt);
  }
  checkpoint::WriteSafetensors(file, no_proj);
  EXPECT_THROW(load(), CheckpointError);
  EXPECT_NO_THROW(LoadHfCheckpoint(*model, dir.path(), {"", /*allow_missing_projector=*/true}));
}

}  // namespace
}  // namespace lcl::model
