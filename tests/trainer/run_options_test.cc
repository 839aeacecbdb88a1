// The config -> options functions every command shares: default paths, training and evaluation episodes and
// prompts, the optimizer and checkpoint options, and the recipes (data.recipe) that fill the data fields left unset.
#include "trainer/run_options.h"

#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

#include <fstream>

#include "cluster/errors.h"
#include "tests/test_util.h"
#include "trainer/recipe.h"
#include "trainer/train_config.h"

namespace lcl::trainer {
namespace {

TrainConfig ConfigOf(const std::vector<std::string>& overrides) { return LoadTrainConfig("", overrides).config; }

TEST(RunOptions, EmptyPathsDefaultUnderTheDataRootAndTheModel) {
  const DataPaths d = DataPathsOf(ConfigOf({"data.root=/d", "model.path=/m"}));
  EXPECT_EQ(d.train_pairs, "/d/train_pairs.jsonl");
  EXPECT_EQ(d.test_pairs, "/d/test_pairs.jsonl");
  EXPECT_EQ(d.tokenizer, "/m/tokenizer.model");
  EXPECT_EQ(d.model_config, "/m/config.json");
  const DataPaths given = DataPathsOf(ConfigOf({"data.root=/d", "model.path=/m", "data.train_pairs=/p/t.jsonl",
                                                "eval.test_pairs=/p/e.jsonl", "model.tokenizer=/t/tok.model"}));
  EXPECT_EQ(given.train_pairs, "/p/t.jsonl");
  EXPECT_EQ(given.test_pairs, "/p/e.jsonl");
  EXPECT_EQ(given.tokenizer, "/t/tok.model");
}

TEST(RunOptions, TrainingEpisodesTakeTheDataFieldsAndTheRunSeed) {
  const lcl::testing::TempDir dir("run_options");
  const std::string templates = dir / "t.json";
  std::ofstream(templates) << R"(["Which is <image>?"])";
  const sampler::EpisodeConfig e =
      EpisodeOptionsOf(ConfigOf({"seed=99", "data.policy=2way_random_shot", "data.shot=3", "data.made_up_negative=0.5",
                                 "data.made_up_max_letters=4", "data.templates=" + templates}));
  EXPECT_EQ(e.policy, sampler::Policy::k2WayRandomShot);
  EXPECT_EQ(e.shot, 3);
  EXPECT_EQ(e.seed, 99u);
  EXPECT_DOUBLE_EQ(e.made_up_negative, 0.5);
  EXPECT_EQ(e.made_up_max_letters, 4);
  EXPECT_EQ(e.templates, std::vector<std::string>{"Which is <image>?"});
  EXPECT_TRUE(EpisodeOptionsOf(ConfigOf({})).templates.empty());  // the built-in templates
}

TEST(RunOptions, EvaluationShotsFallBackToTheTrainingShot) {
  const EvalEpisodeOptions fallback = EvalEpisodeOptionsOf(ConfigOf({"data.shot=5"}));
  EXPECT_EQ(fallback.shots, std::vector<int>{5});
  EXPECT_EQ(fallback.labels, sampler::EvalLabels::kMadeUpWords);
  const EvalEpisodeOptions listed =
      EvalEpisodeOptionsOf(ConfigOf({"data.shot=5", "eval.shots=0,2", "eval.seed=3", "eval.labels=class_names"}));
  EXPECT_EQ(listed.shots, (std::vector<int>{0, 2}));
  EXPECT_EQ(listed.seed, 3u);
  EXPECT_EQ(listed.labels, sampler::EvalLabels::kClassNames);
}

TEST(RunOptions, TheOfficialEvaluationProtocolScoresClassNamesWithTheOfficialDraws) {
  const EvalEpisodeOptions lcl = EvalEpisodeOptionsOf(ConfigOf({}));
  EXPECT_FALSE(lcl.official);
  EXPECT_EQ(lcl.labels, sampler::EvalLabels::kMadeUpWords);
  const EvalEpisodeOptions official = EvalEpisodeOptionsOf(ConfigOf({"eval.protocol=official"}));
  EXPECT_TRUE(official.official);
  EXPECT_EQ(official.labels, sampler::EvalLabels::kClassNames);
}

TEST(RunOptions, TheOfficialDrawsNamesAndPaddingReachEveryPart) {
  const TrainConfig c = ConfigOf(
      {"data.draw_with_replacement=true", "data.lowercase_names=true", "data.pad_color=white", "data.policy=jigsaw"});
  EXPECT_EQ(EpisodeOptionsOf(c).policy, sampler::Policy::kJigsaw);
  EXPECT_TRUE(EpisodeOptionsOf(c).draw_with_replacement);
  EXPECT_TRUE(EpisodeOptionsOf(c).lowercase_names);
  EXPECT_TRUE(EvalEpisodeOptionsOf(c).lowercase_names);
  EXPECT_EQ(ImageSpecOf(c, 336).pad, sampler::PadColor::kWhite);
  EXPECT_EQ(ImageSpecOf(c, 336).size, 336);
  // The defaults: lcl's draws, names as written, the CLIP mean.
  const TrainConfig d = ConfigOf({});
  EXPECT_FALSE(EpisodeOptionsOf(d).draw_with_replacement);
  EXPECT_FALSE(EpisodeOptionsOf(d).lowercase_names);
  EXPECT_FALSE(EvalEpisodeOptionsOf(d).lowercase_names);
  EXPECT_EQ(ImageSpecOf(d, 224).pad, sampler::PadColor::kMean);
  lcl::testing::ExpectErrorMentions<ConfigError>([] { ImageSpecOf(ConfigOf({"data.pad_color=grey"}), 224); },
                                                 {"'grey'", "mean | white"});
}

TEST(RunOptions, EvaluationPromptsNeverNameTheSupportClasses) {
  const TrainConfig c = ConfigOf(
      {"data.support_names=true", "data.prompt_layout=compact", "data.max_length=300", "data.image_markers=false"});
  const sampler::PromptConfig train = PromptOptionsOf(c, 16, EpisodeUse::kTraining);
  const sampler::PromptConfig eval = PromptOptionsOf(c, 16, EpisodeUse::kEvaluation);
  EXPECT_TRUE(train.support_names);
  EXPECT_FALSE(eval.support_names);
  for (const sampler::PromptConfig& p : {train, eval}) {
    EXPECT_EQ(p.image_tokens, 16);
    EXPECT_EQ(p.max_length, 300);
    EXPECT_EQ(p.layout, sampler::PromptLayout::kCompact);
    EXPECT_FALSE(p.image_markers);
  }
}

TEST(RunOptions, OptimizerOptionsTakeTheOptimizerAndGradientSyncFields) {
  const optim::OptimizerOptions o = OptimizerOptionsOf(ConfigOf(
      {"optimizer.beta1=0.8", "optimizer.beta2=0.95", "optimizer.eps=1e-6", "optimizer.weight_decay=0.1",
       "optimizer.clip_norm=2", "parallel.zero1=false", "parallel.bucket_mb=0.5", "parallel.overlap_grad_sync=false"}));
  EXPECT_DOUBLE_EQ(o.beta1, 0.8);
  EXPECT_DOUBLE_EQ(o.beta2, 0.95);
  EXPECT_DOUBLE_EQ(o.eps, 1e-6);
  EXPECT_DOUBLE_EQ(o.weight_decay, 0.1);
  EXPECT_DOUBLE_EQ(o.clip_norm, 2.0);
  EXPECT_FALSE(o.zero1);
  EXPECT_EQ(o.bucket_bytes, 512 * 1024);
  EXPECT_FALSE(o.overlap);
}

TEST(RunOptions, CheckpointOptionsRecordTheGridAndTheTestPhaseDelay) {
  const checkpoint::CheckpointOptions co = CheckpointOptionsOf(
      ConfigOf({"run_dir=/r", "checkpoint.keep_last=4", "checkpoint.keep_every=10", "checkpoint.async=false",
                "checkpoint.fail_on_error=true", "checkpoint.test_phase_delay_ms=150"}),
      cluster::GridShape::Make(4, 2));
  EXPECT_EQ(co.run_dir, "/r");
  EXPECT_EQ(co.keep_last, 4);
  EXPECT_EQ(co.keep_every, 10);
  EXPECT_FALSE(co.async);
  EXPECT_TRUE(co.fail_on_error);
  EXPECT_EQ(co.phase_delay.count(), 150);
  EXPECT_EQ(co.grid.world(), 4);
  EXPECT_EQ(co.grid.tp(), 2);
  EXPECT_EQ(co.grid.dp(), 2);
  EXPECT_EQ(CheckpointOptionsOf(ConfigOf({}), cluster::GridShape::Make(1, 1)).phase_delay.count(), 0);
}

// --- data.recipe ---

const char* const kCausal =
    "You should find the causal relationship between the examples I am going to show you. And use that to answer to "
    "the [FINAL QUESTION].";
const char* const kEvalQuestion = "Based on the previous examples, what is in the image <image>?";

// A field of data as text ("true", "official", ...), for comparing with a recipe's values.
std::string DataFieldText(const TrainConfig& c, const std::string& name) {
  const google::protobuf::FieldDescriptor* f = DataSection::descriptor()->FindFieldByName(name);
  EXPECT_NE(f, nullptr) << "no data." << name;
  if (f == nullptr) return "";
  std::string text;
  google::protobuf::TextFormat::PrintFieldValueToString(c.data(), f, -1, &text);
  if (text.size() >= 2 && text.front() == '"') text = text.substr(1, text.size() - 2);  // strings print quoted
  return text;
}

TEST(Recipe, OfficialSetsEveryOneOfItsFieldsAndThePartsTakeThem) {
  const lcl::testing::TempDir dir("recipe");
  const std::string templates = dir / "ICL.json";
  std::ofstream(templates) << R"(["What is in the image <image>?", "Tell me about <image>."])";
  const LoadedConfig loaded = LoadTrainConfig("", {"data.recipe=official", "data.templates=" + templates});
  const TrainConfig& c = loaded.config;
  ASSERT_FALSE(RecipeFields("official").empty());
  for (const auto& [field, value] : RecipeFields("official")) {
    EXPECT_EQ(DataFieldText(c, field), value) << "data." << field;
    EXPECT_NE(loaded.Where("data." + field).find("data.recipe=official"), std::string::npos) << loaded.Where(field);
  }
  EXPECT_EQ(c.data().prompt_layout(), "official");
  EXPECT_EQ(c.data().loss_on(), "final");
  EXPECT_EQ(c.data().system(), kCausal);
  EXPECT_EQ(c.data().eval_question(), kEvalQuestion);
  EXPECT_EQ(c.data().too_long(), "reject");
  EXPECT_TRUE(c.data().image_markers());
  EXPECT_TRUE(c.data().draw_with_replacement());
  EXPECT_TRUE(c.data().lowercase_names());
  EXPECT_EQ(c.data().pad_color(), "white");
  ValidateConfig(LoadTrainConfig("", {"data.recipe=official", "model.path=/m", "data.root=/d"}));

  const sampler::PromptConfig train = PromptOptionsOf(c, 256, EpisodeUse::kTraining);
  const sampler::PromptConfig eval = PromptOptionsOf(c, 256, EpisodeUse::kEvaluation);
  for (const sampler::PromptConfig& p : {train, eval}) {
    EXPECT_EQ(p.layout, sampler::PromptLayout::kOfficial);
    EXPECT_EQ(p.loss_on, sampler::LossOn::kFinal);
    EXPECT_EQ(p.system, kCausal);
    EXPECT_FALSE(p.reduce_shots);
    EXPECT_TRUE(p.image_markers);
  }
  // Training asks from the templates file, evaluation its one fixed question.
  const sampler::EpisodeConfig episodes = EpisodeOptionsOf(c);
  EXPECT_EQ(episodes.templates.size(), 2u);
  EXPECT_TRUE(episodes.draw_with_replacement);
  EXPECT_TRUE(episodes.lowercase_names);
  EXPECT_EQ(EvalEpisodeOptionsOf(c).templates, std::vector<std::string>{kEvalQuestion});
  EXPECT_EQ(EvalEpisodeOptionsOf(ConfigOf({"data.templates=" + templates})).templates.size(), 2u);  // lcl: the same
  // lcl ships no ICL.json: the official recipe without data.templates says what to set.
  lcl::testing::ExpectErrorMentions<ConfigError>([] { CheckTrainingTemplates(ConfigOf({"data.recipe=official"})); },
                                                 {"data.templates", "ICL.json"});
  CheckTrainingTemplates(c);
  CheckTrainingTemplates(ConfigOf({}));  // lcl's recipe has built-in templates
}

TEST(Recipe, AFieldSetExplicitlyOverridesTheRecipeWhereverItIsSet) {
  const lcl::testing::TempDir dir("recipe");
  const std::string file = dir / "c.pbtxt";
  std::ofstream(file) << "data { recipe: \"official\" pad_color: \"mean\" prompt_layout: \"vicuna\" }\n";
  // A --set before the recipe's own --set still wins: the recipe fills only what nothing gave.
  const LoadedConfig loaded = LoadTrainConfig(file, {"data.loss_on=all", "data.too_long=drop_shots"});
  const DataSection& d = loaded.config.data();
  EXPECT_EQ(d.pad_color(), "mean");
  EXPECT_EQ(d.prompt_layout(), "vicuna");
  EXPECT_EQ(d.loss_on(), "all");
  EXPECT_EQ(d.too_long(), "drop_shots");
  EXPECT_NE(loaded.Where("data.pad_color").find("c.pbtxt:1"), std::string::npos);
  EXPECT_EQ(loaded.Where("data.loss_on"), "--set data.loss_on=all");
  EXPECT_EQ(d.system(), kCausal);  // the rest is the recipe's
  EXPECT_EQ(d.eval_question(), kEvalQuestion);
  EXPECT_TRUE(d.lowercase_names());
  // Set to the recipe's own value explicitly: still "given" (and the same).
  EXPECT_EQ(LoadTrainConfig("", {"data.recipe=official", "data.loss_on=final"}).Where("data.loss_on"),
            "--set data.loss_on=final");
  const sampler::PromptConfig p = PromptOptionsOf(loaded.config, 8, EpisodeUse::kTraining);
  EXPECT_EQ(p.layout, sampler::PromptLayout::kVicuna);
  EXPECT_EQ(p.loss_on, sampler::LossOn::kAll);
  EXPECT_TRUE(p.reduce_shots);
}

TEST(Recipe, LclIsTheFieldDefaults) {
  EXPECT_TRUE(RecipeFields("lcl").empty());
  TrainConfig lcl = ConfigOf({"data.recipe=lcl"});
  lcl.mutable_data()->clear_recipe();
  EXPECT_EQ(lcl.data().SerializeAsString(), DataSection().SerializeAsString());  // nothing else set
  const TrainConfig defaults = ConfigOf({});
  EXPECT_EQ(defaults.data().recipe(), "lcl");
  EXPECT_EQ(defaults.data().prompt_layout(), "vicuna");
  EXPECT_EQ(defaults.data().loss_on(), "all");
  EXPECT_EQ(defaults.data().too_long(), "drop_shots");
  EXPECT_TRUE(defaults.data().eval_question().empty());
  const sampler::PromptConfig p = PromptOptionsOf(defaults, 256, EpisodeUse::kTraining);
  EXPECT_EQ(p.system, sampler::PromptConfig{}.system);  // one sentence, whichever default is read
  EXPECT_EQ(p.max_length, sampler::PromptConfig{}.max_length);
  EXPECT_GE(p.max_length, 33 * 258 + 1700);  // a 16-shot episode at 256 tokens per image
}

TEST(Recipe, UnknownValuesAreConfigErrorsListingTheChoices) {
  lcl::testing::ExpectErrorMentions<ConfigError>([] { LoadTrainConfig("", {"data.recipe=paper"}); },
                                                 {"--set data.recipe=paper", "'paper'", "lcl | official"});
  lcl::testing::ExpectErrorMentions<ConfigError>([] { RecipeFields("paper"); }, {"paper", "lcl | official"});
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"data.loss_on=answers", "all | final"},
      {"data.too_long=cut", "drop_shots | reject"},
      {"data.prompt_layout=fancy", "vicuna | official | compact"}};
  for (const auto& [set, choices] : cases) {
    const LoadedConfig c = LoadTrainConfig("", {"model.path=/m", "data.root=/d", set});
    lcl::testing::ExpectErrorMentions<ConfigError>([&] { ValidateConfig(c); }, {set.substr(0, set.find('=')), choices});
    // The parts say the same to a caller that did not validate.
    lcl::testing::ExpectErrorMentions<ConfigError>([&] { PromptOptionsOf(c.config, 8, EpisodeUse::kTraining); },
                                                   {choices});
  }
  lcl::testing::ExpectErrorMentions<ConfigError>(
      [] {
        ValidateConfig(LoadTrainConfig("", {"model.path=/m", "data.root=/d", "data.eval_question=What?"}));
      },
      {"data.eval_question", "<image>"});
}

}  // namespace
}  // namespace lcl::trainer
