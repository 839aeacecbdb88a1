// `lcl train` and `lcl eval`.
#include <algorithm>
#include <iostream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cluster/errors.h"
#include "cluster/exit_codes.h"
#include "cluster/logging.h"
#include "launch/cli.h"
#include "trainer/train_config.h"
#include "trainer/trainer.h"

namespace lcl::launch {
namespace {

struct TrainArgs {
  std::string config;
  std::vector<std::string> overrides;
  std::string resume;
  std::string run_dir;
  bool print_config = false;
  std::vector<CLI::Option*> run_dir_options;  // train's and eval's: was --run-dir given at all (even as "")
  std::string checkpoint;                     // eval only
  // eval only: shorthands for eval.format + its file, and eval.image_root
  std::string test_pairs, isekai, index, image_root;
};

trainer::LoadedConfig Load(const TrainArgs& a) {
  std::vector<std::string> overrides = a.overrides;
  const bool run_dir_given = std::any_of(a.run_dir_options.begin(), a.run_dir_options.end(),
                                         [](const CLI::Option* o) { return o->count() > 0; });
  if (run_dir_given && a.run_dir.empty()) {
    throw ConfigError("--run-dir is empty; give a directory, or leave --run-dir out to use the config's run_dir");
  }
  if (!a.run_dir.empty()) overrides.push_back("run_dir=" + a.run_dir);
  for (const auto& [format, file] :
       {std::pair<std::string, std::string>{"test_pairs", a.test_pairs}, {"isekai", a.isekai}, {"index", a.index}}) {
    if (file.empty()) continue;
    overrides.push_back("eval.format=" + format);
    overrides.push_back("eval." + format + "=" + file);
  }
  if (!a.image_root.empty()) overrides.push_back("eval.image_root=" + a.image_root);
  return trainer::LoadTrainConfig(a.config, overrides);
}

}  // namespace

void RegisterTrainCommands(CLI::App& app, Launch& launch) {
  auto args = std::make_shared<TrainArgs>();
  auto* train = app.add_subcommand("train", "train under mpirun/srun from a .pbtxt config");
  train->add_option("--config", args->config, "training config (protobuf text format; see docs/config.md)")->required();
  train->add_option("--set", args->overrides, "override a config field: path.to.field=value (repeatable)");
  train->add_option("--resume", args->resume,
                    "auto (newest complete checkpoint of run_dir, or a fresh start) | a step directory");
  args->run_dir_options.push_back(train->add_option("--run-dir", args->run_dir, "shorthand for --set run_dir=DIR"));
  train->add_flag("--print-config", args->print_config, "print the effective config (every field) and exit");
  train->callback([&launch, args] {
    launch.action = [&launch, args] {
      // main installed the SIGTERM/SIGUSR1 watcher for `lcl train` before anything else.
      trainer::LoadedConfig loaded = Load(*args);
      if (args->print_config) {
        trainer::ValidateConfig(loaded);  // values only: the layout is checked at launch, against the world size
        std::cout << trainer::ConfigText(loaded.config);
        return kExitOk;
      }
      cluster::MpiSession& mpi = launch.Mpi();
      cluster::InitLogging((*launch.argv)[0], mpi.rank(), mpi.size(), "");
      return trainer::Train(mpi, loaded, args->resume);
    };
  });

  auto* eval = app.add_subcommand("eval", "2-way LCL evaluation at chosen shots (greedy generation)");
  eval->add_option("--config", args->config, "config (protobuf text format): model, data, eval sections")->required();
  eval->add_option("--set", args->overrides, "override a config field: path.to.field=value (repeatable)");
  args->run_dir_options.push_back(
      eval->add_option("--run-dir", args->run_dir, "shorthand for --set run_dir=DIR (eval.jsonl goes there)"));
  eval->add_option("--checkpoint", args->checkpoint,
                   "evaluate a checkpoint's model: auto (newest of run_dir) | a step directory; default: model.path");
  auto* test_pairs = eval->add_option("--test-pairs", args->test_pairs,
                                      "shorthand for --set eval.format=test_pairs --set eval.test_pairs=FILE");
  auto* isekai = eval->add_option("--isekai", args->isekai,
                                  "shorthand for --set eval.format=isekai --set eval.isekai=FILE (ISEKAI-style jsonl)");
  auto* index = eval->add_option("--index", args->index,
                                 "shorthand for --set eval.format=index --set eval.index=FILE (`lcl data index` "
                                 "JSON: evaluate its held-out classes)");
  test_pairs->excludes(isekai)->excludes(index);
  isekai->excludes(index);
  eval->add_option("--image-root", args->image_root,
                   "shorthand for --set eval.image_root=DIR (base of the isekai file's or the index's image paths)");
  eval->callback([&launch, args] {
    launch.action = [&launch, args] {
      trainer::LoadedConfig loaded = Load(*args);
      cluster::MpiSession& mpi = launch.Mpi();
      cluster::InitLogging((*launch.argv)[0], mpi.rank(), mpi.size(), "");
      return trainer::Evaluate(mpi, loaded, args->checkpoint);
    };
  });
}

}  // namespace lcl::launch
