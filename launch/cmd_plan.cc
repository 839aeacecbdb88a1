// `lcl plan`: per-rank memory and FLOPs of a training config before launching it (trainer/plan.h).
#include <cctype>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "cluster/errors.h"
#include "cluster/exit_codes.h"
#include "launch/cli.h"
#include "model/model_config.h"
#include "trainer/plan.h"
#include "trainer/run_options.h"
#include "trainer/train_config.h"

namespace lcl::launch {
namespace {

struct PlanArgs {
  std::string config;
  std::vector<std::string> overrides;
  int world = 0;
  std::string gpu_mem = "80G";
  bool cpu = false;
  int64_t tokens = 0;
  std::string preset;
  std::vector<std::string> model_sets;
};

// "80G", "40GB", "81920M", "85899345920": bytes (binary units: G = 2^30).
double ParseBytes(const std::string& text, const std::string& flag) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  std::string unit = text.substr(used);
  for (char& ch : unit) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  if (unit.size() == 2 && unit[1] == 'B') unit.pop_back();
  const double scale = unit.empty()  ? 1
                       : unit == "K" ? 1024.0
                       : unit == "M" ? 1048576.0
                       : unit == "G" ? 1073741824.0
                       : unit == "T" ? 1099511627776.0
                                     : 0;
  if (used == 0 || scale == 0 || !(v > 0)) {
    throw ConfigError(flag + " " + text + ": expected a size such as 80G, 40GB or 81920M");
  }
  return v * scale;
}

// The model to plan: --preset (with --model-set), else model.path's config.json.
lcl::model::ModelConfig PlanModel(const PlanArgs& a, const trainer::LoadedConfig& loaded) {
  if (!a.preset.empty()) {
    return lcl::model::ModelConfig::FromPreset(a.preset).WithOverrides(a.model_sets, "--model-set");
  }
  if (!a.model_sets.empty()) throw ConfigError("--model-set needs --preset (it changes a preset's config.json)");
  const trainer::TrainConfig& c = loaded.config;
  try {
    return lcl::model::ModelConfig::FromHfDirectory(c.model().path(), c.model().vision_checkpoint());
  } catch (const ConfigError& e) {
    throw ConfigError(std::string(e.what()) + "; to plan without the model directory, pass --preset " +
                      "tiny|small|llava-7b (and --model-set KEY=VALUE for other shapes)");
  }
}

}  // namespace

void RegisterPlanCommands(CLI::App& app, Launch& launch) {
  auto args = std::make_shared<PlanArgs>();
  auto* cmd = app.add_subcommand("plan", "per-rank memory and FLOPs of a training config, and the layouts that fit");
  cmd->add_option("--config", args->config, "training config (protobuf text format)")->required();
  cmd->add_option("--set", args->overrides, "override a config field: path.to.field=value (repeatable)");
  cmd->add_option("--world", args->world, "ranks to plan for (as mpirun -np)")->required();
  cmd->add_option("--gpu-mem", args->gpu_mem, "memory per rank (80G, 40GB, 81920M)")->capture_default_str();
  cmd->add_flag("--cpu", args->cpu, "plan CPU ranks (fp32, host runtime) instead of GPUs");
  cmd->add_option("--tokens", args->tokens, "tokens per episode (default: estimated from the config)");
  cmd->add_option("--preset", args->preset, "plan this preset's model instead of model.path (tiny|small|llava-7b)");
  cmd->add_option("--model-set", args->model_sets, "with --preset: override a config.json field, KEY=VALUE");
  cmd->callback([&launch, args] {
    launch.action = [args]() -> int {
      const trainer::LoadedConfig loaded = trainer::LoadTrainConfig(args->config, args->overrides);
      trainer::PlanInputs in;
      in.world = args->world;
      in.device_bytes = ParseBytes(args->gpu_mem, "--gpu-mem");
      in.gpu = !args->cpu;
      in.tokens = args->tokens;
      lcl::model::ModelConfig model = PlanModel(*args, loaded);
      model.activation_checkpointing = loaded.config.model().activation_checkpointing();
      trainer::PrintPlan(trainer::MakePlan(loaded, model, in), std::cout);
      return kExitOk;
    };
  });
}

}  // namespace lcl::launch
