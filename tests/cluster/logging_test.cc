// Logging: one file per rank, `[rank r/N]` on every line, clear error for an unwritable directory, and glog's
// LOG/VLOG in effect after LibTorch's headers (cluster/log.h).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "cluster/errors.h"
#include "cluster/log.h"
#include "cluster/logging.h"
#include "tests/test_util.h"
// After cluster/log.h on purpose: the order in which a LibTorch built without glog used to take LOG over.
#include <torch/torch.h>

namespace lcl::cluster {
namespace {

TEST(Logging, EveryLineInTheRankFileCarriesTheRankTag) {
  const lcl::testing::TempDir tmp("logging_test");
  const std::filesystem::path dir = tmp.path();
  InitLogging("logging_test", /*rank=*/2, /*size=*/4, dir.string());
  LOG(INFO) << "first line";
  LOG(WARNING) << "second line";
  FlushLogs();
  EXPECT_EQ(LogFilePath(), (dir / "rank2.log").string());
  std::ifstream in(dir / "rank2.log");
  std::string line;
  int lines = 0;
  while (std::getline(in, line)) {
    ++lines;
    EXPECT_NE(line.find("] [rank 2/4] "), std::string::npos) << line;
  }
  EXPECT_EQ(lines, 2);
  InitLogging("logging_test", 0, 1, "");  // back to stderr only for the other tests
}

TEST(Logging, InfoAndVlogFromAFileIncludingTorchReachTheRankFile) {
  const auto dir = std::filesystem::temp_directory_path() / ("lcl_logging_vlog_" + std::to_string(getpid()));
  InitLogging("logging_test", /*rank=*/1, /*size=*/2, dir.string());
  const int v = FLAGS_v;
  FLAGS_v = 1;
  LOG(INFO) << "info after torch " << torch::ones({2}).sum().item<float>();
  VLOG(1) << "vlog after torch";
  VLOG(2) << "not at -v 1";
  FLAGS_v = v;
  FlushLogs();
  std::ifstream in(dir / "rank1.log");
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_NE(text.str().find("] [rank 1/2] info after torch 2"), std::string::npos) << text.str();
  EXPECT_NE(text.str().find("] [rank 1/2] vlog after torch"), std::string::npos) << text.str();
  EXPECT_EQ(text.str().find("not at -v 1"), std::string::npos) << text.str();
  InitLogging("logging_test", 0, 1, "");
  std::filesystem::remove_all(dir);
}

TEST(Logging, UnwritableLogDirectoryIsAConfigErrorNamingIt) {
  try {
    InitLogging("logging_test", 0, 1, "/proc/lcl-cannot-exist/logs");
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("/proc/lcl-cannot-exist/logs"), std::string::npos) << e.what();
  }
  InitLogging("logging_test", 0, 1, "");
}

}  // namespace
}  // namespace lcl::cluster
