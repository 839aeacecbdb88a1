// Logging: one file per rank, `[rank r/N]` on every line, clear error for an unwritable directory.
#include <glog/logging.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "cluster/errors.h"
#include "cluster/logging.h"
#include "tests/test_util.h"

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
