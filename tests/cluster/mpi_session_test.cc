// MpiSession: launcher cross-checks and the MPI error check macro.
#include <gtest/gtest.h>

#include "cluster/check.h"
#include "cluster/errors.h"
#include "cluster/mpi_session.h"
#include "tests/test_main.h"
#include "tests/test_util.h"

namespace lcl::cluster {
namespace {

std::string ErrorOf(int rank, int size, int local, const std::map<std::string, std::string>& env) {
  return lcl::testing::ErrorOf<ConfigError>([&] { MpiSession::CheckLauncherEnv(rank, size, local, env); });
}

TEST(MpiSession, SlurmTaskCountDifferentFromSingletonWorldNamesPmix) {
  const std::string msg = ErrorOf(0, 1, 0, {{"SLURM_NTASKS", "2"}});
  EXPECT_NE(msg.find("SLURM_NTASKS=2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--mpi=pmix"), std::string::npos) << msg;
}

TEST(MpiSession, SlurmTaskCountDifferentFromWorldIsAClearError) {
  const std::string msg = ErrorOf(0, 2, 0, {{"SLURM_NTASKS", "4"}});
  EXPECT_NE(msg.find("world size is 2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("mpirun -np 4"), std::string::npos) << msg;
}

TEST(MpiSession, SrunStepTaskCountTakesPrecedenceOverJobTaskCount) {
  // Inside a 4-task job, a 2-task srun step is consistent.
  EXPECT_EQ(ErrorOf(0, 2, 0, {{"SLURM_NTASKS", "4"}, {"SLURM_STEP_NUM_TASKS", "2"}}), "");
  EXPECT_NE(ErrorOf(0, 2, 0, {{"SLURM_NTASKS", "2"}, {"SLURM_STEP_NUM_TASKS", "4"}}), "");
}

TEST(MpiSession, MatchingLauncherEnvironmentPasses) {
  EXPECT_EQ(ErrorOf(1, 2, 1,
                    {{"SLURM_NTASKS", "2"},
                     {"OMPI_COMM_WORLD_SIZE", "2"},
                     {"OMPI_COMM_WORLD_RANK", "1"},
                     {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}}),
            "");
  EXPECT_EQ(ErrorOf(0, 1, 0, {}), "");
}

TEST(MpiSession, OpenMpiWorldSizeMismatchMeansAWrongMpiLibrary) {
  const std::string msg = ErrorOf(0, 1, 0, {{"OMPI_COMM_WORLD_SIZE", "2"}});
  EXPECT_NE(msg.find("different MPI"), std::string::npos) << msg;
}

TEST(MpiSession, RunsWithThreadMultipleAndKnowsItsHost) {
  const MpiSession& mpi = lcl::testing::Mpi();
  EXPECT_EQ(mpi.size(), 1);
  EXPECT_EQ(mpi.rank(), 0);
  EXPECT_EQ(mpi.local_rank(), 0);
  EXPECT_FALSE(mpi.hostname().empty());
  EXPECT_STREQ(MpiSession::ThreadLevelName(mpi.thread_level()), "MPI_THREAD_MULTIPLE");
  EXPECT_NE(MpiSession::LibraryVersion().find("MPI"), std::string::npos);
}

TEST(MpiCheck, FailedCallBecomesCommErrorWithCallTextAndLocation) {
  int value = 0;
  try {
    LCL_MPI_CHECK(MPI_Bcast(&value, 1, MPI_INT, /*root=*/7, MPI_COMM_WORLD));
    FAIL() << "expected CommError";
  } catch (const CommError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("MPI_Bcast(&value, 1, MPI_INT, 7, MPI_COMM_WORLD)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("mpi_session_test.cc:"), std::string::npos) << msg;
    EXPECT_NE(msg.find("MPI_ERR_ROOT"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace lcl::cluster
