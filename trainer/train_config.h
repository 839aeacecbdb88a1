// Loading, overriding and checking the training config (trainer/config.proto), and the run plan derived from it
// and the world size. Errors name the file and line of the offending field (or the --set that gave it).
//
//   LoadedConfig c = LoadTrainConfig("launch/configs/tiny.pbtxt", {"optimizer.lr=3e-4", "eval.shots=0,2"});
//   ValidateConfig(c);                                                     // every value (before MPI starts)
//   ValidateLayout(c, /*world_size=*/4);                                   // tp and the batch fit the world
//   RunPlan plan = PlanRun(c, /*world_size=*/4, /*episodes_per_epoch=*/96);  // dp, grad_accum, total steps
//   std::cout << ConfigText(c.config);                                     // effective config, text format
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "trainer/config.pb.h"

namespace lcl::trainer {

struct LoadedConfig {
  TrainConfig config;
  std::string path;  // the file it came from ("" = defaults only)
  // Where each field was set: "path.to.field" -> "file.pbtxt:12" or "--set path.to.field=value".
  std::map<std::string, std::string> origin;
  // "file:line" or "--set ..." for a field path, or "<path> (default)" when it was never set.
  std::string Where(const std::string& field_path) const;
};

// Parses `path` (text format; "" = all defaults) and applies each "a.b.c=value" override in order. Throws
// lcl::ConfigError naming file:line:column for syntax errors and unknown fields, and the --set for bad overrides.
// Repeated fields take a comma-separated list and replace the file's values.
LoadedConfig LoadTrainConfig(const std::string& path, const std::vector<std::string>& overrides);

// Applies one "a.b.c=value" override (exposed for tests).
void ApplyOverride(const std::string& assignment, LoadedConfig* loaded);

// What the config and the world size determine. Every batch size and step count the loop uses.
struct RunPlan {
  int world_size = 1;
  int tp = 1;
  int dp = 1;
  int micro_batch = 1;
  int grad_accum = 1;
  int global_batch = 1;  // = micro_batch * grad_accum * dp
  int64_t total_steps = 0;
  uint64_t episodes_per_epoch = 0;
};

// Checks every value on its own (ranges, choices, fields one format needs), whatever the world size. Throws
// lcl::ConfigError naming the field, where it was set, the value and what to change.
void ValidateConfig(const LoadedConfig& loaded);

// Checks that the layout fits `world_size` ranks: tp divides it, and batch.global_batch can be formed from
// micro_batch x dp (and agrees with batch.grad_accum when both are set). Throws lcl::ConfigError as above.
void ValidateLayout(const LoadedConfig& loaded, int world_size);

// Derives the plan of a config both checks accepted (a CHECK failure otherwise): dp, grad_accum, global batch and
// total steps. episodes_per_epoch = 0 skips the epoch conversion (total_steps stays as configured).
RunPlan PlanRun(const LoadedConfig& loaded, int world_size, uint64_t episodes_per_epoch);

// The steps a list like "5", "5-7" or "3,10-12" names (steps count from 1); empty text = none. Throws ConfigError
// whose message is the problem (e.g. "= '7-5' ...") for the caller to put after the field's name.
std::set<int64_t> ParseStepList(const std::string& text);

// The effective config in text format (what `--print-config` prints and checkpoints store).
std::string ConfigText(const TrainConfig& config);

}  // namespace lcl::trainer
