// `lcl ckpt ...`: list, verify and inspect checkpoints.
#include "launch/cli.h"

namespace lcl::launch {

void RegisterCkptCommands(CLI::App& ckpt, Launch& launch) {
  for (const char* name : {"list", "verify", "inspect"}) {
    auto* sub = ckpt.add_subcommand(name, std::string("ckpt ") + name);
    sub->allow_extras();
    sub->callback([&launch, name] { launch.action = NotYetBuilt(std::string("ckpt ") + name, "#6"); });
  }
}

}  // namespace lcl::launch
