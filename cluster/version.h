// Build and runtime versions for `lcl --version` and the start-up log: git revision, LibTorch, MPI, NCCL, and
// which optional parts (NCCL, OpenCV, SentencePiece) were built.
#pragma once

#include <string>

namespace lcl::cluster {

// Several lines, "name: value".
std::string VersionReport();

}  // namespace lcl::cluster
