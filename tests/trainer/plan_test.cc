// `lcl plan`'s model (trainer/plan.h): parameter counts against the model the trainer builds, the same ConfigErrors
// as training for a layout that cannot divide, and the memory terms' dependence on ZeRO-1, TP, checkpointing and
// the episode length.
#include "trainer/plan.h"

#include <gtest/gtest.h>

#include <sstream>

#include "cluster/errors.h"
#include "model/multimodal_model.h"
#include "model/tp_layers.h"
#include "tests/test_util.h"

namespace lcl::trainer {
namespace {

using lcl::model::ModelConfig;

LoadedConfig Config(const std::vector<std::string>& sets) {
  LoadedConfig c;
  c.config.mutable_model()->set_path("m");
  c.config.mutable_data()->set_root("d");
  for (const std::string& s : sets) ApplyOverride(s, &c);
  return c;
}

// What one TP rank of `tp` holds, counted from the model itself: each parameter's placement as its layer declares
// it (split tensors divided by tp), summed over the trainable modules and over the tower.
void CountBuilt(const ModelConfig& config, int tp, int64_t* trainable, int64_t* frozen) {
  lcl::model::MultimodalModel model(config, lcl::model::TpGroup{});
  *trainable = *frozen = 0;
  for (const lcl::model::ParamPlacement& p : lcl::model::TpPlacements(*model)) {
    const int64_t n = p.param.numel() / (p.split.dim >= 0 ? tp : 1);
    (p.name.rfind("vision_tower.", 0) == 0 ? *frozen : *trainable) += n;
  }
}

TEST(Plan, ParameterCountsAreTheBuiltModelsAtEveryTpSize) {
  struct Case {
    std::string preset;
    std::vector<std::string> sets;
  };
  for (const Case& c : {Case{"tiny", {}}, Case{"small", {}},
                        Case{"tiny",
                             {"num_key_value_heads=2", "attention_bias=true", "mlp_bias=true",
                              "tie_word_embeddings=true", "mm_projector_type=linear"}}}) {
    const ModelConfig config = ModelConfig::FromPreset(c.preset).WithOverrides(c.sets, "--model-set");
    for (int tp : {1, 2}) {
      int64_t trainable = 0, frozen = 0;
      CountBuilt(config, tp, &trainable, &frozen);
      const ParamCounts n = CountParams(config, tp);
      EXPECT_EQ(n.trainable, trainable) << c.preset << " " << c.sets.size() << " tp " << tp;
      EXPECT_EQ(n.frozen, frozen) << c.preset << " tp " << tp;
      EXPECT_EQ(n.trainable, n.decoder + n.projector);
    }
  }
}

TEST(Plan, ALayoutThatCannotDivideIsTheConfigErrorTrainingGives) {
  const ModelConfig tiny = ModelConfig::FromPreset("tiny");
  PlanInputs in;
  in.world = 3;
  // tp 2 on 3 ranks: ValidateLayout's error, word for word.
  const LoadedConfig two = Config({"parallel.tp=2"});
  const std::string want = lcl::testing::ErrorOf<ConfigError>([&] { ValidateLayout(two, 3); });
  ASSERT_FALSE(want.empty());
  EXPECT_EQ(lcl::testing::ErrorOf<ConfigError>([&] { MakePlan(two, tiny, in); }), want);
  // tp 3 on 3 ranks with heads that do not divide by 3: the model's own check, as BuildRunModel runs it.
  const LoadedConfig three = Config({"parallel.tp=3"});
  const std::string heads = lcl::testing::ErrorOf<ConfigError>([&] { tiny.Validate(3); });
  ASSERT_FALSE(heads.empty());
  EXPECT_EQ(lcl::testing::ErrorOf<ConfigError>([&] { MakePlan(three, tiny, in); }), heads);
  // A negative episode length.
  in.world = 1;
  in.tokens = -5;
  lcl::testing::ExpectErrorMentions<ConfigError>([&] { MakePlan(Config({}), tiny, in); }, {"--tokens -5"});
  in.tokens = 0;
  // A global batch the micro-batches cannot form.
  const LoadedConfig batch = Config({"batch.global_batch=5", "batch.micro_batch=2"});
  in.world = 1;
  EXPECT_EQ(lcl::testing::ErrorOf<ConfigError>([&] { MakePlan(batch, tiny, in); }),
            lcl::testing::ErrorOf<ConfigError>([&] { ValidateLayout(batch, 1); }));
}

TEST(Plan, Zero1DividesTheOptimizerStateAndTpTheTrainableSlice) {
  const ModelConfig m = ModelConfig::FromPreset("llava-7b");
  PlanInputs in;
  in.world = 8;
  const Plan p = MakePlan(Config({"batch.global_batch=64", "model.activation_checkpointing=true"}), m, in);
  const ParamCounts n = CountParams(m, 1);
  const LayoutPlan& l = p.configured;  // tp 1 x dp 8
  EXPECT_EQ(l.dp, 8);
  EXPECT_DOUBLE_EQ(l.moments, 8.0 * n.trainable / 8);
  EXPECT_DOUBLE_EQ(l.masters, 4.0 * n.trainable / 8);
  EXPECT_DOUBLE_EQ(l.weights, 2.0 * (n.trainable + n.frozen));  // bf16 on GPUs
  const Plan off = MakePlan(Config({"batch.global_batch=64", "parallel.zero1=false"}), m, in);
  EXPECT_DOUBLE_EQ(off.configured.moments, 8.0 * n.trainable);
  // Every layout forms the global batch, and tp 8 holds about an eighth of tp 1's trainable bytes.
  const LayoutPlan* tp8 = nullptr;
  for (const LayoutPlan& x : p.layouts) {
    EXPECT_EQ(x.micro_batch * x.dp * x.grad_accum, 64) << x.tp << " " << x.micro_batch;
    if (x.tp == 8 && x.micro_batch == 1) tp8 = &x;
  }
  ASSERT_NE(tp8, nullptr);
  EXPECT_NEAR(tp8->gradients / l.gradients, 1.0 / 8, 0.01);
}

TEST(Plan, CheckpointingKeepsActivationsLinearInTheEpisodeLength) {
  const ModelConfig m = ModelConfig::FromPreset("llava-7b");
  PlanInputs in;
  const LoadedConfig c = Config({"model.activation_checkpointing=true", "data.shot=16"});
  in.tokens = 5000;
  const Plan a = MakePlan(c, m, in);
  in.tokens = 10000;
  const Plan b = MakePlan(c, m, in);
  EXPECT_GT(a.configured.activations_full, 5 * a.configured.activations_checkpointed);
  EXPECT_DOUBLE_EQ(a.configured.activations, a.configured.activations_checkpointed);
  // Twice the tokens (the same images): the decoder's part doubles, the images' part stays; segment attention has
  // no T x T mask, so its workspace doubles too.
  const double ratio = b.configured.activations / a.configured.activations;
  EXPECT_GT(ratio, 1.8);
  EXPECT_LT(ratio, 2.0);
  EXPECT_DOUBLE_EQ(b.configured.attention, 2 * a.configured.attention);
  EXPECT_GT(b.configured.flops_per_step, 2 * a.configured.flops_per_step);  // attention's square term
  EXPECT_GT(a.configured.flops_per_step_recompute, a.configured.flops_per_step);
}

TEST(Plan, TheEstimatedEpisodeIsTheOfficialSixteenShotOne) {
  const ModelConfig m = ModelConfig::FromPreset("llava-7b");
  const LoadedConfig c = Config({"data.shot=16", "data.recipe=official"});
  const EpisodeSize e = EstimateEpisode(c.config, m, 0);
  EXPECT_EQ(e.images, 33);
  EXPECT_NEAR(double(e.tokens), 9653, 10);  // measured: 9,653 tokens
  EXPECT_TRUE(e.estimated);
  EXPECT_EQ(EstimateEpisode(c.config, m, 4000).tokens, 4000);
  std::ostringstream out;
  PlanInputs in;
  PrintPlan(MakePlan(c, m, in), out);
  EXPECT_NE(out.str().find("episode: 9653 tokens, 33 images"), std::string::npos) << out.str();
  EXPECT_NE(out.str().find("fits"), std::string::npos);
}

}  // namespace
}  // namespace lcl::trainer
