// Helpers shared by the gtest binaries: a self-removing temporary directory and typed-error message checks.
//
//   lcl::testing::TempDir dir("shards");            // /tmp/lcl_shards_XXXXXX, removed with its contents
//   WriteSafetensors(dir / "x.safetensors", ...);
//   std::string msg = lcl::testing::ErrorOf<DataError>([&] { Parse(dir / "x.safetensors"); });
//   lcl::testing::ExpectErrorMentions<ConfigError>([&] { Load(path); }, {path, "line 3"});
#pragma once

#include <gtest/gtest.h>
#include <mpi.h>
#include <stdlib.h>

#include <cerrno>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

namespace lcl::testing {

// A fresh directory under the system temp dir, made by mkdtemp (so two in one process, or two processes, never
// share one), removed with everything in it when the object dies.
class TempDir {
 public:
  explicit TempDir(const std::string& tag = "test") : path_(Make(tag)) {}

  // Collective over `comm`: rank 0 makes the directory and sends its path, so every rank of `comm` gets the same
  // one (for files one rank writes and the others read). The destructor is collective too: it waits for every
  // rank before rank 0 removes the directory.
  TempDir(const std::string& tag, MPI_Comm comm) : comm_(comm) {
    MPI_Comm_rank(comm_, &rank_);
    if (rank_ == 0) path_ = Make(tag);
    int size = static_cast<int>(path_.size());
    MPI_Bcast(&size, 1, MPI_INT, 0, comm_);
    path_.resize(static_cast<size_t>(size));
    MPI_Bcast(path_.data(), size, MPI_CHAR, 0, comm_);
  }

  ~TempDir() {
    if (comm_ != MPI_COMM_NULL) MPI_Barrier(comm_);
    if (rank_ != 0) return;
    std::error_code ec;  // best effort: a destructor must not throw
    std::filesystem::remove_all(path_, ec);
  }

  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  static std::string Make(const std::string& tag) {
    std::string pattern = (std::filesystem::temp_directory_path() / ("lcl_" + tag + "_XXXXXX")).string();
    // gtest reports the exception as the failure of the test that asked for the directory.
    if (mkdtemp(pattern.data()) == nullptr) {
      throw std::system_error(errno, std::generic_category(), "mkdtemp " + pattern);
    }
    return pattern;
  }

  std::string path_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
};

// The message of the `Error` that `fn` throws, or "" when `fn` returns normally. Other exceptions propagate, so
// gtest reports an error of the wrong type as such.
template <class Error, class F>
std::string ErrorOf(F&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Expects `fn` to throw an `Error` whose message holds every one of `parts`.
template <class Error, class F>
void ExpectErrorMentions(F&& fn, const std::vector<std::string>& parts) {
  const std::string what = ErrorOf<Error>(fn);
  if (what.empty()) {
    ADD_FAILURE() << "expected an error mentioning '" << (parts.empty() ? "" : parts.front()) << "', got none";
    return;
  }
  for (const auto& part : parts) {
    EXPECT_NE(what.find(part), std::string::npos) << "'" << part << "' not in: " << what;
  }
}

}  // namespace lcl::testing
