// MpiSession: MPI initialisation, rank discovery and launcher cross-checks.
#include "cluster/mpi_session.h"

#include <unistd.h>

#include <cstdlib>
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
}  // namespace

MpiSession::MpiSession(int* argc, char*** argv) {
  int already = 0;
  MPI_Initialized(&already);
  if (!already) {
    // MULTIPLE because the checkpoint writer, the watchdog and async collectives live on other threads.
    int rc = MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &thread_level_);
    if (rc != MPI_SUCCESS) {
      throw CommError("MPI_Init_thread failed (code " + std::to_string(rc) +
                      "); is this binary started by mpirun/srun with a working Open MPI?");
    }
    initialised_here_ = true;
  } else {
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
