// MpiSession: MPI initialisation, rank discovery and launcher cross-checks.
#include "cluster/mpi_session.h"

#include <sys/prctl.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <vector>

#include "cluster/check.h"
#include "cluster/errors.h"
#include "cluster/mpi_comm.h"
#include "cluster/log.h"

namespace lcl::cluster {

namespace internal {
void ThrowMpiError(int code, const char* call, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) snprintf(text, sizeof(text), "code %d", code);
  std::ostringstream msg;
  msg << "MPI call failed: " << call << " at " << file << ":" << line << ": " << text;
  throw CommError(msg.str());
}
}  // namespace internal

namespace {
const char* const kLauncherVars[] = {"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK",
                                     "SLURM_NTASKS",         "SLURM_STEP_NUM_TASKS", "SLURM_PROCID",
                                     "SLURM_LOCALID",        "SLURM_JOB_ID"};

bool ParseInt(const std::map<std::string, std::string>& env, const char* name, int* out) {
  auto it = env.find(name);
  if (it == env.end() || it->second.empty()) return false;
  char* end = nullptr;
  long v = std::strtol(it->second.c_str(), &end, 10);
  if (*end != '\0') return false;
  *out = static_cast<int>(v);
  return true;
}

constexpr const char* kSingleCopyVar = "OMPI_MCA_btl_vader_single_copy_mechanism";
constexpr const char* kSingleCopyVarSm = "OMPI_MCA_btl_sm_single_copy_mechanism";  // Open MPI 5's name

// Ranks on this node according to the launcher, or an upper bound (srun's whole step); 1 when it does not say.
int LocalRanksFromLauncher() {
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_STEP_NUM_TASKS"}) {
    if (const char* v = std::getenv(name); v && *v) return std::atoi(v);
  }
  return 1;
}

}  // namespace

std::string MpiSession::ChooseSingleCopy(int local_ranks, bool apply) {
  for (const char* name : {kSingleCopyVar, kSingleCopyVarSm}) {
    if (const char* v = std::getenv(name)) return std::string(v) + " (from the environment, " + name + ")";
  }
  if (local_ranks <= 1) return "Open MPI's default (one rank on this node)";
  std::string why;
  if (CrossMemoryAttachWorks(&why)) return "cma (Open MPI's default; cross-memory attach works here)";
  if (apply) {
    setenv(kSingleCopyVar, "none", 1);
    setenv(kSingleCopyVarSm, "none", 1);
  }
  return "none (set by lcl: cross-memory attach is refused here, " + why +
         "; shared-memory copies go through a buffer)";
}

bool MpiSession::CrossMemoryAttachWorks(std::string* why) {
  static volatile uint64_t word = 0;  // the child sets it; the parent's copy stays 0
  constexpr uint64_t kMark = 0x6c636c2d636d6121ULL;
  int ready[2], hold[2];
  if (pipe(ready) != 0) {
    if (why) *why = std::string("pipe: ") + std::strerror(errno);
    return false;
  }
  if (pipe(hold) != 0) {
    if (why) *why = std::string("pipe: ") + std::strerror(errno);
    close(ready[0]), close(ready[1]);
    return false;
  }
  const pid_t pid = fork();
  if (pid == 0) {  // only async-signal-safe calls: the parent may have threads
    close(ready[0]), close(hold[1]);
    word = kMark;
#ifdef PR_SET_PTRACER
    prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);  // what Open MPI's shared-memory transport does
#endif
    char c = 1;
    if (write(ready[1], &c, 1) != 1) _exit(1);
    while (read(hold[0], &c, 1) < 0 && errno == EINTR) {
    }
    _exit(0);
  }
  close(ready[1]), close(hold[0]);
  bool ok = false;
  if (pid < 0) {
    if (why) *why = std::string("fork: ") + std::strerror(errno);
  } else {
    char c = 0;
    ssize_t n = 0;
    while ((n = read(ready[0], &c, 1)) < 0 && errno == EINTR) {
    }
    uint64_t got = 0;
    iovec local{&got, sizeof(got)};
    iovec remote{const_cast<uint64_t*>(&word), sizeof(got)};
    const ssize_t copied = n == 1 ? process_vm_readv(pid, &local, 1, &remote, 1, 0) : -1;
    const int err = errno;
    ok = copied == static_cast<ssize_t>(sizeof(got)) && got == kMark;
    if (!ok && why) {
      *why = n != 1       ? std::string("the probe's child did not start")
             : copied < 0 ? std::string("process_vm_readv: ") + std::strerror(err)
                          : std::string("process_vm_readv read the wrong bytes");
    }
  }
  close(hold[1]);  // the child's read returns 0 and it exits
  close(ready[0]);
  if (pid > 0) {
    while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
  return ok;
}

MpiSession::MpiSession(int* argc, char*** argv) {
  int already = 0;
  MPI_Initialized(&already);
  if (!already) {
    single_copy_ = ChooseSingleCopy(LocalRanksFromLauncher(), /*apply=*/true);
    // MULTIPLE because the checkpoint writer, the watchdog and async collectives live on other threads.
    int rc = MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &thread_level_);
    if (rc != MPI_SUCCESS) {
      throw CommError("MPI_Init_thread failed (code " + std::to_string(rc) +
                      "); is this binary started by mpirun/srun with a working Open MPI?");
    }
    initialised_here_ = true;
  } else {
    single_copy_ = "chosen by whoever initialised MPI";
    MPI_Query_thread(&thread_level_);
  }
  // Errors come back as codes, so LCL_MPI_CHECK can turn them into CommErrors with the call text.
  LCL_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  LCL_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank_));
  LCL_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size_));

  {
    const MpiComm local = MpiComm::SplitShared(MPI_COMM_WORLD, rank_);
    local_rank_ = local.rank();
    local_size_ = local.size();
  }

  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  hostname_ = host;

  if (thread_level_ != MPI_THREAD_MULTIPLE && rank_ == 0) {
    LOG(WARNING) << "MPI granted " << ThreadLevelName(thread_level_)
                 << " instead of MPI_THREAD_MULTIPLE: collectives are serialised behind one lock.";
  }
  CheckLauncherEnv(rank_, size_, local_rank_, LauncherEnv());
}

MpiSession::~MpiSession() {
  if (!initialised_here_) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

const char* MpiSession::ThreadLevelName(int level) {
  switch (level) {
    case MPI_THREAD_SINGLE:
      return "MPI_THREAD_SINGLE";
    case MPI_THREAD_FUNNELED:
      return "MPI_THREAD_FUNNELED";
    case MPI_THREAD_SERIALIZED:
      return "MPI_THREAD_SERIALIZED";
    case MPI_THREAD_MULTIPLE:
      return "MPI_THREAD_MULTIPLE";
    default:
      return "unknown MPI thread level";
  }
}

std::string MpiSession::LibraryVersion() {
  char text[MPI_MAX_LIBRARY_VERSION_STRING] = {0};
  int len = 0;
  MPI_Get_library_version(text, &len);
  std::string s(text, len);
  auto cut = s.find_first_of(",\n");
  return cut == std::string::npos ? s : s.substr(0, cut);
}

void MpiSession::AbortWorld(int code) {
  google::FlushLogFiles(google::GLOG_INFO);
  int initialised = 0, finalized = 0;
  MPI_Initialized(&initialised);
  MPI_Finalized(&finalized);
  if (initialised && !finalized) MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

std::map<std::string, std::string> MpiSession::LauncherEnv() {
  std::map<std::string, std::string> env;
  for (const char* name : kLauncherVars) {
    if (const char* v = std::getenv(name)) env[name] = v;
  }
  return env;
}

void MpiSession::CheckLauncherEnv(int rank, int size, int local_rank, const std::map<std::string, std::string>& env) {
  int v = 0;
  // Under srun the step's task count is the one that must match; under mpirun inside sbatch, the job's.
  const char* slurm_var = env.count("SLURM_STEP_NUM_TASKS") ? "SLURM_STEP_NUM_TASKS" : "SLURM_NTASKS";
  if (ParseInt(env, slurm_var, &v) && v != size) {
    std::ostringstream msg;
    msg << "Slurm says " << slurm_var << "=" << v << " but MPI's world size is " << size << ". ";
    if (size == 1) {
      msg << "Every task started as its own 1-rank MPI world: srun could not wire the ranks together. Launch "
             "with `srun --mpi=pmix` (check `srun --mpi=list` shows pmix; Open MPI must be built with PMIx), "
             "or use mpirun inside the allocation.";
    } else {
      msg << "Launch as many MPI ranks as Slurm tasks (mpirun -np " << v << " or srun --mpi=pmix --ntasks=" << size
          << ").";
    }
    throw ConfigError(msg.str());
  }
  if (ParseInt(env, "OMPI_COMM_WORLD_SIZE", &v) && v != size) {
    throw ConfigError("OMPI_COMM_WORLD_SIZE=" + std::to_string(v) + " but MPI_Comm_size gives " + std::to_string(size) +
                      ": this binary was linked against a different MPI than the mpirun that started it. "
                      "Use the mpirun of the Open MPI the project was built with.");
  }
  if (ParseInt(env, "OMPI_COMM_WORLD_RANK", &v) && v != rank) {
    throw ConfigError("OMPI_COMM_WORLD_RANK=" + std::to_string(v) + " but MPI_Comm_rank gives " + std::to_string(rank) +
                      ": mismatched MPI runtime and launcher.");
  }
  // SLURM_LOCALID describes this process only when srun started it (under mpirun in a batch script it is the
  // batch step's), so it is compared only inside an srun step.
  std::vector<const char*> local_vars = {"OMPI_COMM_WORLD_LOCAL_RANK"};
  if (env.count("SLURM_STEP_NUM_TASKS") && env.count("SLURM_PROCID")) local_vars.push_back("SLURM_LOCALID");
  for (const char* name : local_vars) {
    if (ParseInt(env, name, &v) && v != local_rank) {
      LOG(WARNING) << name << "=" << v << " differs from the shared-memory local rank " << local_rank << " (rank "
                   << rank << "); using " << local_rank << " for device binding.";
    }
  }
}

}  // namespace lcl::cluster
