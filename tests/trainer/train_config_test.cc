// The training config: text-format parsing with line-numbered errors, --set overrides, the value and layout checks,
// and the batch arithmetic of the run plan.
#include "trainer/train_config.h"

#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "cluster/errors.h"
#include "tests/test_util.h"
#include "trainer/run_options.h"

namespace lcl::trainer {
namespace {

using lcl::testing::ErrorOf;

// Writes `text` to `name` in the binary's scratch directory (removed at exit); returns the path.
std::string WriteTemp(const std::string& name, const std::string& text) {
  static const lcl::testing::TempDir dir("config_test");
  const std::string path = dir / name;
  std::ofstream(path) << text;
  return path;
}

const char* kGood = R"(run_dir: "runs/x"
model { path: "m" }
data {
  root: "d"
  shot: 4
}
batch { micro_batch: 2 global_batch: 8 }
optimizer { lr: 1e-3 }
eval { shots: [0, 2] }
)";

TEST(TrainConfig, ParsesTheShippedTinyConfig) {
  const char* source = std::getenv("LCL_SOURCE_DIR");  // set by ctest
  ASSERT_NE(source, nullptr) << "run under ctest (LCL_SOURCE_DIR names the source tree)";
  LoadedConfig c = LoadTrainConfig(std::string(source) + "/launch/configs/tiny.pbtxt", {});
  EXPECT_EQ(c.config.model().path(), "runs/data/tiny-model");
  EXPECT_GT(c.config.schedule().total_steps(), 0);
  ValidateConfig(c);
  ValidateLayout(c, 2);
  RunPlan plan = PlanRun(c, 2, 48);
  EXPECT_EQ(plan.dp, 2);
  EXPECT_EQ(plan.global_batch, plan.micro_batch * plan.grad_accum * plan.dp);
}

TEST(TrainConfig, ReadsFieldsAndRecordsTheirLines) {
  LoadedConfig c = LoadTrainConfig(WriteTemp("good.pbtxt", kGood), {});
  EXPECT_EQ(c.config.data().shot(), 4);
  EXPECT_DOUBLE_EQ(c.config.optimizer().lr(), 1e-3);
  EXPECT_EQ(c.config.eval().shots_size(), 2);
  EXPECT_NE(c.Where("data.shot").find("good.pbtxt:5"), std::string::npos) << c.Where("data.shot");
  EXPECT_NE(c.Where("optimizer.beta1").find("default"), std::string::npos);
}

TEST(TrainConfig, UnknownFieldNamesTheFileLineAndField) {
  const std::string path = WriteTemp("unknown.pbtxt", "run_dir: \"x\"\noptimizer {\n  lrr: 3\n}\n");
  const std::string err = ErrorOf<ConfigError>([&] { LoadTrainConfig(path, {}); });
  EXPECT_NE(err.find("unknown.pbtxt:3"), std::string::npos) << err;
  EXPECT_NE(err.find("lrr"), std::string::npos) << err;
}

TEST(TrainConfig, BadValueNamesTheFieldAndItsLine) {
  const std::string path = WriteTemp("bad.pbtxt", std::string(kGood) + "logging { every_steps: 0 }\n");
  LoadedConfig c = LoadTrainConfig(path, {});
  const std::string err = ErrorOf<ConfigError>([&] { ValidateConfig(c); });
  EXPECT_NE(err.find("bad.pbtxt:10"), std::string::npos) << err;
  EXPECT_NE(err.find("logging.every_steps"), std::string::npos) << err;
  // A value outside a field's choices names the field and the choices.
  LoadedConfig layout = LoadTrainConfig(WriteTemp("layout.pbtxt", kGood), {"data.prompt_layout=verbose"});
  const std::string choice = ErrorOf<ConfigError>([&] { ValidateConfig(layout); });
  EXPECT_NE(choice.find("data.prompt_layout"), std::string::npos) << choice;
  EXPECT_NE(choice.find("compact"), std::string::npos) << choice;
  // A type error is caught by the parser, with the line.
  const std::string typed = WriteTemp("typed.pbtxt", "run_dir: \"x\"\ndata { shot: \"four\" }\n");
  EXPECT_NE(ErrorOf<ConfigError>([&] { LoadTrainConfig(typed, {}); }).find("typed.pbtxt:2"), std::string::npos);
}

TEST(TrainConfig, TraceStepsAndWaitModeAreParsedAndCheckedUpFront) {
  EXPECT_EQ(ParseStepList(""), (std::set<int64_t>{}));
  EXPECT_EQ(ParseStepList("5"), (std::set<int64_t>{5}));
  EXPECT_EQ(ParseStepList("3, 10-12"), (std::set<int64_t>{3, 10, 11, 12}));
  EXPECT_EQ(ParseStepList("2-2,2"), (std::set<int64_t>{2}));
  const std::string path = WriteTemp("trace.pbtxt", kGood);
  ValidateConfig(LoadTrainConfig(path, {"logging.trace_steps=2-4", "parallel.wait=spin"}));
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"logging.trace_steps=0", {"logging.trace_steps", "'0'", "step 0", "\"5-7\""}},
      {"logging.trace_steps=7-5", {"logging.trace_steps", "'7-5'", "ends before it starts"}},
      {"logging.trace_steps=a", {"logging.trace_steps", "'a'", "not a step number"}},
      {"logging.trace_steps=3,", {"logging.trace_steps", "ends with a comma"}},
      {"logging.trace_steps=1-9999999", {"logging.trace_steps", "more than 100000"}},
      {"parallel.wait=busy", {"parallel.wait", "'busy'", "sleep | spin"}}};
  for (const auto& [set, mentions] : cases) {
    const LoadedConfig c = LoadTrainConfig(path, {set});
    lcl::testing::ExpectErrorMentions<ConfigError>([&] { ValidateConfig(c); }, mentions);
  }
}

TEST(TrainConfig, MixFilesAndWeightsAreParsedAndCheckedUpFront) {
  const std::string path = WriteTemp("mix.pbtxt", kGood);
  const LoadedConfig two = LoadTrainConfig(path, {"data.mix_files=a.json, b.json", "data.mix_weights=0.25,0.5"});
  ValidateConfig(two);
  const std::vector<MixFileOption> files = MixFilesOf(two.config);
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(files[1].path, "b.json");
  EXPECT_DOUBLE_EQ(files[1].probability, 0.5);
  EXPECT_TRUE(MixFilesOf(LoadTrainConfig(path, {}).config).empty());
  const std::vector<std::pair<std::vector<std::string>, std::vector<std::string>>> cases = {
      {{"data.mix_files=a.json"}, {"--set data.mix_files=a.json", "gives 0 probabilities"}},
      {{"data.mix_files=a.json", "data.mix_weights=half"}, {"--set data.mix_weights=half", "'half' is not a number"}},
      {{"data.mix_files=a.json", "data.mix_weights=0.5x"}, {"'0.5x' is not a number"}},
      {{"data.mix_files=a.json", "data.mix_weights=1.5"}, {"1.5 (for a.json) is outside [0, 1]"}},
      {{"data.mix_files=a.json,", "data.mix_weights=0.5,0.1"}, {"has an empty entry"}},
      {{"data.mix_files=a.json,b.json", "data.mix_weights=0.7,0.4"}, {"sums to 1.1", "LCL episodes take 1 - the sum"}}};
  for (const auto& [sets, mentions] : cases) {
    const LoadedConfig c = LoadTrainConfig(path, sets);
    lcl::testing::ExpectErrorMentions<ConfigError>([&] { ValidateConfig(c); }, mentions);
  }
}

TEST(TrainConfig, PolicyAndPadColourAcceptOnlyTheirChoices) {
  const std::string path = WriteTemp("choices.pbtxt", kGood);
  for (const std::string policy : {"2way_weight", "2way_random_shot", "2way_ref", "jigsaw"}) {
    ValidateConfig(LoadTrainConfig(path, {"data.policy=" + policy}));
  }
  ValidateConfig(LoadTrainConfig(path, {"data.pad_color=white"}));
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"data.policy=3way", {"data.policy", "'3way'", "2way_weight | 2way_random_shot | 2way_ref | jigsaw"}},
      {"data.pad_color=black", {"data.pad_color", "'black'", "mean | white"}},
      {"data.policy=2way_ref", {"data.shot", "= 2", "2way_ref", ">= 3"}}};  // shot 2 is too few for 2way_ref
  for (const auto& [set, mentions] : cases) {
    const LoadedConfig c = LoadTrainConfig(path, {"data.shot=2", set});
    lcl::testing::ExpectErrorMentions<ConfigError>([&] { ValidateConfig(c); }, mentions);
  }
}

TEST(TrainConfig, EvalProtocolAcceptsItsChoicesAndOfficialScoresClassNamesOnly) {
  const std::string path = WriteTemp("protocol.pbtxt", kGood);
  ValidateConfig(LoadTrainConfig(path, {"eval.protocol=official"}));
  ValidateConfig(LoadTrainConfig(path, {"eval.protocol=official", "eval.labels=class_names"}));
  lcl::testing::ExpectErrorMentions<ConfigError>(
      [&] { ValidateConfig(LoadTrainConfig(path, {"eval.protocol=paper"})); },
      {"eval.protocol", "'paper'", "lcl | official"});
  lcl::testing::ExpectErrorMentions<ConfigError>(
      [&] {
        ValidateConfig(LoadTrainConfig(path, {"eval.protocol=official", "eval.labels=made_up"}));
      },
      {"eval.labels", "made_up", "eval.protocol = official"});
}

TEST(TrainConfig, DataRootIsNeededUnlessEvaluationReadsAnIsekaiFileOrAnIndex) {
  const std::string path = WriteTemp("root.pbtxt", kGood);
  LoadedConfig no_root = LoadTrainConfig(path, {"data.root="});
  const std::string err = ErrorOf<ConfigError>([&] { ValidateConfig(no_root); });
  EXPECT_NE(err.find("data.root"), std::string::npos) << err;
  for (const std::string input : {"eval.format=isekai", "eval.format=index"}) {
    const std::string file = input == "eval.format=isekai" ? "eval.isekai=/data/isekai.jsonl" : "eval.index=/d/i.json";
    LoadedConfig eval_only = LoadTrainConfig(path, {"data.root=", input, file});
    EXPECT_EQ(ErrorOf<ConfigError>([&] { ValidateConfig(eval_only); }), "") << input;
  }
  // So does evaluating a test-pairs file named outright.
  LoadedConfig named = LoadTrainConfig(path, {"data.root=", "eval.test_pairs=/d/test_pairs.jsonl"});
  EXPECT_EQ(ErrorOf<ConfigError>([&] { ValidateConfig(named); }), "");
}

TEST(TrainConfig, MissingFileIsAClearError) {
  const std::string err = ErrorOf<ConfigError>([] { LoadTrainConfig("/nonexistent/x.pbtxt", {}); });
  EXPECT_NE(err.find("/nonexistent/x.pbtxt"), std::string::npos) << err;
  EXPECT_NE(err.find("--config"), std::string::npos) << err;
}

TEST(TrainConfig, OverridesSetScalarsListsAndRecordTheirOrigin) {
  LoadedConfig c = LoadTrainConfig(
      WriteTemp("o.pbtxt", kGood),
      {"optimizer.lr=3e-4", "parallel.zero1=false", "run_dir=elsewhere", "eval.shots=1,2,4", "schedule.total_steps=7"});
  EXPECT_DOUBLE_EQ(c.config.optimizer().lr(), 3e-4);
  EXPECT_FALSE(c.config.parallel().zero1());
  EXPECT_EQ(c.config.run_dir(), "elsewhere");
  ASSERT_EQ(c.config.eval().shots_size(), 3);  // replaced, not appended
  EXPECT_EQ(c.config.eval().shots(2), 4);
  EXPECT_EQ(c.config.schedule().total_steps(), 7);
  EXPECT_EQ(c.Where("optimizer.lr"), "--set optimizer.lr=3e-4");
}

TEST(TrainConfig, BadOverridesSayWhatIsWrong) {
  LoadedConfig c;
  EXPECT_NE(ErrorOf<ConfigError>([&] { ApplyOverride("optimizer.lrr=1", &c); }).find("fields there: lr,"),
            std::string::npos);
  EXPECT_NE(ErrorOf<ConfigError>([&] { ApplyOverride("optimizer.lr=fast", &c); }).find("'fast' is not a double"),
            std::string::npos);
  EXPECT_NE(ErrorOf<ConfigError>([&] { ApplyOverride("optimizer=1", &c); }).find("is a section"), std::string::npos);
  EXPECT_NE(ErrorOf<ConfigError>([&] { ApplyOverride("seed", &c); }).find("path.to.field=value"), std::string::npos);
  EXPECT_NE(ErrorOf<ConfigError>([&] { ApplyOverride("seed=-3", &c); }).find("not a uint64"), std::string::npos);
  EXPECT_NE(ErrorOf<ConfigError>([&] { ApplyOverride("parallel.zero1=maybe", &c); }).find("not a bool"),
            std::string::npos);
}

TEST(RunPlan, DerivesAccumulationFromTheGlobalBatch) {
  LoadedConfig c = LoadTrainConfig(WriteTemp("p.pbtxt", kGood), {});
  RunPlan p = PlanRun(c, 2, 100);  // micro 2 x dp 2 -> accum 2 for 8
  EXPECT_EQ(p.grad_accum, 2);
  EXPECT_EQ(p.global_batch, 8);
  EXPECT_EQ(p.total_steps, 13);  // ceil(1 epoch x 100 episodes / 8)
  ApplyOverride("parallel.tp=2", &c);
  p = PlanRun(c, 4, 100);
  EXPECT_EQ(p.dp, 2);
  EXPECT_EQ(p.grad_accum, 2);
}

TEST(RunPlan, RejectsLayoutsThatCannotFormTheBatch) {
  LoadedConfig c = LoadTrainConfig(WriteTemp("l.pbtxt", kGood), {});
  EXPECT_EQ(ErrorOf<ConfigError>([&] { ValidateLayout(c, 2); }), "");     // 2 x 2 = 4 divides 8
  std::string err = ErrorOf<ConfigError>([&] { ValidateLayout(c, 3); });  // 2 x 3 = 6 does not divide 8
  EXPECT_NE(err.find("batch.global_batch"), std::string::npos) << err;
  EXPECT_NE(err.find("multiple of 6"), std::string::npos) << err;
  ApplyOverride("parallel.tp=2", &c);
  err = ErrorOf<ConfigError>([&] { ValidateLayout(c, 3); });
  EXPECT_NE(err.find("does not divide the world size 3"), std::string::npos) << err;
  ApplyOverride("parallel.tp=1", &c);
  ApplyOverride("batch.grad_accum=3", &c);
  err = ErrorOf<ConfigError>([&] { ValidateLayout(c, 2); });
  EXPECT_NE(err.find("set only one of them"), std::string::npos) << err;
}

TEST(TrainConfig, ValuesAreCheckedWithoutAWorldSize) {
  // tp 2 fits no world of one rank, yet the values are valid: `--print-config` (ValidateConfig only) accepts them.
  LoadedConfig c = LoadTrainConfig(WriteTemp("v.pbtxt", kGood), {"parallel.tp=2"});
  EXPECT_EQ(ErrorOf<ConfigError>([&] { ValidateConfig(c); }), "");
  EXPECT_NE(ErrorOf<ConfigError>([&] { ValidateLayout(c, 1); }).find("parallel.tp"), std::string::npos);
  ApplyOverride("checkpoint.test_phase_delay_ms=-1", &c);
  const std::string err = ErrorOf<ConfigError>([&] { ValidateConfig(c); });
  EXPECT_NE(err.find("--set checkpoint.test_phase_delay_ms=-1: checkpoint.test_phase_delay_ms"), std::string::npos)
      << err;
}

TEST(TrainConfig, PrintedConfigShowsEveryDefaultAndParsesBack) {
  LoadedConfig c = LoadTrainConfig(WriteTemp("r.pbtxt", kGood), {});
  const std::string text = ConfigText(c.config);
  EXPECT_NE(text.find("beta2: 0.999"), std::string::npos) << text;
  EXPECT_NE(text.find("zero1: true"), std::string::npos) << text;
  TrainConfig back;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &back));
  EXPECT_EQ(back.data().shot(), 4);
  EXPECT_DOUBLE_EQ(back.optimizer().beta2(), 0.999);
}

}  // namespace
}  // namespace lcl::trainer
