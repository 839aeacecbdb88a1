// VersionReport: compiled-in build facts plus the versions of the libraries loaded at run time.
#include "cluster/version.h"

#include <dlfcn.h>
#include <gnu/libc-version.h>
#include <torch/version.h>

#include <sstream>

#include "cluster/mpi_session.h"
#include "cluster/nccl_communicator.h"
#include "lcl/build_info.h"

namespace lcl::cluster {

namespace {

// The file of the loaded library (or executable) that the process's lookup of `symbol` resolves to; "" if none.
std::string FileDefining(const char* symbol) {
  void* address = dlsym(RTLD_DEFAULT, symbol);
  Dl_info info{};
  if (address == nullptr || dladdr(address, &info) == 0 || info.dli_fname == nullptr) return "";
  return info.dli_fname;
}

}  // namespace

std::string MallocName() {
  // Whichever malloc the process resolved: the one linked into lcl (tcmalloc, see cmake/LclDependencies.cmake), one
  // given with LD_PRELOAD (which comes first), or the C library's; named by the file that defines `malloc`.
  const std::string file = FileDefining("malloc");
  if (file.find("tcmalloc") != std::string::npos) {
    using TcVersion = const char* (*)(int*, int*, const char**);
    if (auto tc_version = reinterpret_cast<TcVersion>(dlsym(RTLD_DEFAULT, "tc_version"))) {
      int major = 0, minor = 0;
      const char* patch = nullptr;
      return std::string("tcmalloc (") + tc_version(&major, &minor, &patch) + ")";
    }
    return "tcmalloc";
  }
  if (file.find("jemalloc") != std::string::npos) return "jemalloc";
  if (file.find("libc.so") != std::string::npos) return std::string("glibc ") + gnu_get_libc_version();
  return file.empty() ? "unknown" : file;
}

std::string TcmallocLibraryPath() { return FileDefining("tc_version"); }

std::string VersionReport() {
  std::ostringstream s;
  s << "lcl " << LCL_VERSION << " (git " << GitRevision() << ", " << LCL_BUILD_TYPE << ")\n"
    << "LibTorch: " << TORCH_VERSION << "\n"
    << "MPI: " << MpiSession::LibraryVersion() << "\n"
    << "malloc: " << MallocName() << "\n"
    << "NCCL: " << (NcclCommunicator::Built() ? NcclCommunicator::Version() : std::string("not built")) << "\n"
    << "optional parts: nccl=" << (LCL_BUILT_NCCL ? "yes" : "no") << " opencv=" << (LCL_BUILT_OPENCV ? "yes" : "no")
    << " sentencepiece=" << (LCL_BUILT_SENTENCEPIECE ? "yes" : "no") << "\n";
  return s.str();
}

}  // namespace lcl::cluster
