// `lcl train` and `lcl eval`.
#include "launch/cli.h"

namespace lcl::launch {

void RegisterTrainCommands(CLI::App& app, Launch& launch) {
  auto* train = app.add_subcommand("train", "train under mpirun/srun from a .pbtxt config");
  train->add_option("--config", "training config (protobuf text format)");
  train->add_option("--set", "override a config field: path.to.field=value (repeatable)");
  train->add_option("--resume", "auto | PATH");
  train->add_flag("--print-config", "print the effective config and exit");
  train->callback([&launch] { launch.action = NotYetBuilt("train", "#5"); });

  auto* eval = app.add_subcommand("eval", "2-way LCL evaluation at chosen shots");
  eval->add_option("--config", "evaluation config (protobuf text format)");
  eval->add_option("--set", "override a config field: path.to.field=value (repeatable)");
  eval->callback([&launch] { launch.action = NotYetBuilt("eval", "#5"); });
}

}  // namespace lcl::launch
