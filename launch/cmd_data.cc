// `lcl data ...`: ImageNet index, neighbours, episodes, synthetic data.
#include "launch/cli.h"

namespace lcl::launch {

void RegisterDataCommands(CLI::App& data, Launch& launch) {
  for (const char* name : {"synth", "index", "neighbors", "episodes"}) {
    auto* sub = data.add_subcommand(name, std::string("data ") + name);
    sub->allow_extras();
    sub->callback([&launch, name] { launch.action = NotYetBuilt(std::string("data ") + name, "#4"); });
  }
}

}  // namespace lcl::launch
