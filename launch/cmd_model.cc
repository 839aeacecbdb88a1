// `lcl model ...`: create, import and export models.
#include "launch/cli.h"

namespace lcl::launch {

void RegisterModelCommands(CLI::App& model, Launch& launch) {
  for (const char* name : {"init", "export-hf"}) {
    auto* sub = model.add_subcommand(name, std::string("model ") + name);
    sub->allow_extras();
    sub->callback([&launch, name] { launch.action = NotYetBuilt(std::string("model ") + name, "#3"); });
  }
}

}  // namespace lcl::launch
