// Shared pieces of the command tree.
#include "launch/cli.h"

#include "cluster/errors.h"

namespace lcl::launch {

std::function<int()> NotYetBuilt(const std::string& command, const std::string& issue) {
  return [command, issue]() -> int {
    throw NotBuiltError("`lcl " + command + "` is not implemented in this version yet (tracked in issue " +
                        issue + ").");
  };
}

}  // namespace lcl::launch
