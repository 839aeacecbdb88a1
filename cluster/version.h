// Build and runtime versions for `lcl --version` and the start-up log: git revision, LibTorch, MPI, NCCL, and
// which optional parts (NCCL, OpenCV, SentencePiece) were built.
#pragma once

#include <string>

namespace lcl::cluster {

// Several lines, "name: value".
std::string VersionReport();

// `git describe` of the source tree at the last build (e.g. "8c10745c1a2b-dirty"), or "unknown".
const char* GitRevision();

}  // namespace lcl::cluster
