// Small helpers for sampler tests: file writers and the official data files, plus the common TempDir, ErrorOf
// and ExpectErrorMentions of tests/test_util.h.
//
//   TempDir dir;  WriteText(dir / "a.txt", "hello");
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tests/test_util.h"

namespace lcl::sampler::testing {

// The common scratch directory and error helpers, under the names the sampler tests use.
using lcl::testing::ErrorOf;
using lcl::testing::ExpectErrorMentions;
using lcl::testing::TempDir;

inline void WriteText(const std::string& path, const std::string& text) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

inline void WriteBytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

inline std::string SharedData(const std::string& name) { return std::string(LCL_SHARED_DATA_DIR) + "/" + name; }

}  // namespace lcl::sampler::testing
