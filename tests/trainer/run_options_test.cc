// The config -> options functions every command shares: default paths, training and evaluation episodes and
// prompts, the optimizer and checkpoint options.
#include "trainer/run_options.h"

#include <gtest/gtest.h>

#include <fstream>

#include "cluster/errors.h"
#include "tests/test_util.h"
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

}  // namespace
}  // namespace lcl::trainer
