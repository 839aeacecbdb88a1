// MpiSession: launcher cross-checks, the cross-memory attach probe and the MPI error check macro.
#include <gtest/gtest.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <string>

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

// The probe in a child that refuses process_vm_readv as Docker's default seccomp profile does: it must say no and
// name the refusal. (Where the kernel allows CMA, single_copy_test.sh runs Open MPI with it; here only the
// refusal can be made on purpose.)
TEST(MpiSession, CrossMemoryAttachProbeSeesASeccompRefusal) {
  int out[2];
  ASSERT_EQ(pipe(out), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(out[0]);
    sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_process_vm_readv, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
    };
    sock_fprog prog{static_cast<unsigned short>(sizeof(code) / sizeof(code[0])), code};
    std::string text;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
      text = "cannot install the filter";
    } else {
      std::string why;
      text = (MpiSession::CrossMemoryAttachWorks(&why) ? "works|" : "refused|") + why;
    }
    if (write(out[1], text.data(), text.size()) < 0) _exit(2);
    _exit(0);
  }
  close(out[1]);
  std::string text;
  char buf[256];
  for (ssize_t n; (n = read(out[0], buf, sizeof(buf))) > 0;) text.append(buf, n);
  close(out[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << text;
  EXPECT_EQ(text, "refused|process_vm_readv: Operation not permitted");
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
