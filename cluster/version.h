// Build and runtime versions for `lcl --version` and the start-up log: git revision, LibTorch, MPI, malloc, NCCL, and
// which optional parts (NCCL, OpenCV, SentencePiece) were built.
#pragma once

#include <string>

namespace lcl::cluster {

// Several lines, "name: value".
std::string VersionReport();

// The malloc this process runs on: "tcmalloc (gperftools 2.10)", "jemalloc" or "glibc 2.36".
std::string MallocName();

// The file of the tcmalloc loaded in this process ("" without one), even where an LD_PRELOADed malloc serves it:
// `lcl bench train --reference ddp-tcmalloc` preloads it into the PyTorch reference.
std::string TcmallocLibraryPath();

// `git describe` of the source tree at the last build (e.g. "8c10745c1a2b-dirty"), or "unknown".
const char* GitRevision();

}  // namespace lcl::cluster
