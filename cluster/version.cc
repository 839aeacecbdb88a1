// VersionReport: compiled-in build facts plus the versions of the libraries loaded at run time.
#include "cluster/version.h"

#include <torch/version.h>

#include <sstream>

#include "cluster/mpi_session.h"
#include "cluster/nccl_communicator.h"
#include "lcl/build_info.h"

namespace lcl::cluster {

std::string VersionReport() {
  std::ostringstream s;
  s << "lcl " << LCL_VERSION << " (git " << GitRevision() << ", " << LCL_BUILD_TYPE << ")\n"
    << "LibTorch: " << TORCH_VERSION << "\n"
    << "MPI: " << MpiSession::LibraryVersion() << "\n"
    << "NCCL: " << (NcclCommunicator::Built() ? NcclCommunicator::Version() : std::string("not built")) << "\n"
    << "optional parts: nccl=" << (LCL_BUILT_NCCL ? "yes" : "no") << " opencv=" << (LCL_BUILT_OPENCV ? "yes" : "no")
    << " sentencepiece=" << (LCL_BUILT_SENTENCEPIECE ? "yes" : "no") << "\n";
  return s.str();
}

}  // namespace lcl::cluster
