// Small helpers for sampler tests: a self-deleting temp directory and file writers.
//
//   TempDir dir;  WriteText(dir.path() + "/a.txt", "hello");
#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cluster/errors.h"

namespace lcl::sampler::testing {

// The message of the DataError that `fn` throws, or "(no error)" (other exceptions propagate).
template <typename F>
std::string DataErrorOf(F fn) {
  try {
    fn();
  } catch (const DataError& e) {
    return e.what();
  }
  return "(no error)";
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "lcl_sampler_XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline void WriteText(const std::string& path, const std::string& text) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

inline void WriteBytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
}

inline std::string SharedData(const std::string& name) {
  return std::string(LCL_SHARED_DATA_DIR) + "/" + name;
}

}  // namespace lcl::sampler::testing
