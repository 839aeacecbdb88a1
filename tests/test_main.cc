// The gtest main of every test binary. Multi-rank rules: a world size other than --expected_world_size=N fails
// (it never skips), every rank runs every test, only rank 0 prints the full report, other ranks print their
// failures tagged with the rank, and the ranks agree on the verdict (a failure anywhere fails everywhere).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "cluster/logging.h"
#include "tests/test_main.h"

namespace lcl::testing {
namespace {

cluster::MpiSession* g_mpi = nullptr;  // the test harness's only global: set once in main

// On ranks other than 0: print only failures, tagged with the rank.
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (!r.failed()) return;
    std::fprintf(stderr, "[rank %d] FAILURE %s:%d\n%s\n", rank_, r.file_name() ? r.file_name() : "?", r.line_number(),
                 r.summary());
  }

 private:
  int rank_;
};

}  // namespace

const cluster::MpiSession& Mpi() { return *g_mpi; }

}  // namespace lcl::testing

int main(int argc, char** argv) {
  int expected = -1;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--expected_world_size=", 22) == 0) expected = std::atoi(argv[i] + 22);
  }
  ::testing::InitGoogleTest(&argc, argv);
  auto mpi = std::make_unique<lcl::cluster::MpiSession>(&argc, &argv);
  lcl::testing::g_mpi = mpi.get();
  lcl::cluster::InitLogging(argv[0], mpi->rank(), mpi->size(), "");
  const int rank = mpi->rank(), size = mpi->size();

  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new lcl::testing::RankFailurePrinter(rank));
  }
  int failed = 0;
  if (expected > 0 && expected != size) {
    // The premise of the test is its rank count: a wrong one is a failure, never a skip.
    std::fprintf(stderr, "[rank %d] FAILED: this test binary expects %d ranks but runs on %d\n", rank, expected, size);
    failed = 1;
  } else {
    failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  }
  int any_failed = failed;
  MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (rank == 0 && size > 1) {
    std::printf("[lcl test main] %d ranks agree: %s\n", size, any_failed ? "FAILED" : "PASSED");
  }
  mpi.reset();
  return any_failed;
}
