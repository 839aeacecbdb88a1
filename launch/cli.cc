// Shared pieces of the command tree.
#include "launch/cli.h"

namespace lcl::launch {

cluster::MpiSession& Launch::Mpi() {
  // Created on first use, so a command that needs no MPI never starts it.
  if (!mpi) mpi = std::make_unique<cluster::MpiSession>(argc, argv);
  return *mpi;
}

}  // namespace lcl::launch
