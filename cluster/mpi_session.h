// MpiSession: the RAII owner of MPI for the whole process (first in `main`, last out). It requests
// MPI_THREAD_MULTIPLE, reports what the library granted, finds world rank/size and the node-local rank with the
// shared-memory split, and cross-checks them against the launcher's environment (OMPI_COMM_WORLD_*, SLURM_*).
//
//   lcl::cluster::MpiSession mpi(&argc, &argv);
//   LOG(INFO) << "rank " << mpi.rank() << " of " << mpi.size() << " on " << mpi.hostname();
#pragma once

#include <map>
#include <mpi.h>
#include <string>

namespace lcl::cluster {

class MpiSession {
 public:
  // Initialises MPI. Throws lcl::ConfigError when the world does not match the launcher (see CheckLauncherEnv).
  MpiSession(int* argc, char*** argv);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }
  const std::string& hostname() const { return hostname_; }
  // The thread level MPI granted, and its name ("MPI_THREAD_MULTIPLE", ...).
  int thread_level() const { return thread_level_; }
  static const char* ThreadLevelName(int level);
  bool thread_multiple() const { return thread_level_ == MPI_THREAD_MULTIPLE; }
  // The MPI library's own version string (MPI_Get_library_version), first line.
  static std::string LibraryVersion();
  // How Open MPI's shared-memory transport copies large messages on this node, and who chose it: "cma (Open MPI's
  // default)", "none (set by lcl: ...)" or "<value> (from the environment)". Before MPI_Init the session probes
  // cross-memory attach when the launcher's environment leaves the choice open and more than one rank shares the
  // node: where the kernel refuses it (most containers), Open MPI 4.1 would fail at the first large message, so lcl
  // sets btl_vader_single_copy_mechanism=none; where it works, Open MPI keeps its single copy.
  const std::string& single_copy() const { return single_copy_; }
  // The choice and its description for `local_ranks` ranks on this node: a value in the environment is kept, one
  // rank needs none, else CMA stays where CrossMemoryAttachWorks and `none` is the answer where it does not (set in
  // the environment with `apply`, as the session does before MPI_Init; `lcl bench train` only reports it).
  static std::string ChooseSingleCopy(int local_ranks, bool apply);
  // Whether this process may read another process's memory with process_vm_readv, as Open MPI's CMA does (a forked
  // child that allows any tracer, as Open MPI's ranks do, is read). `why` gets the refusal when not.
  static bool CrossMemoryAttachWorks(std::string* why);

  // Ends every rank with `code` now (MPI_Abort on the world). Used when one rank cannot go on and the others
  // might be waiting for it in a collective.
  [[noreturn]] static void AbortWorld(int code);

  // Compares world size/rank/local rank with what the launcher put in the environment. A Slurm task count that
  // differs from MPI's world size (typically srun without --mpi=pmix: every task is a singleton) is a
  // ConfigError; local-rank disagreements are warnings. `env` maps variable names to values (tests pass fakes).
  static void CheckLauncherEnv(int rank, int size, int local_rank, const std::map<std::string, std::string>& env);
  // The launcher variables of the real environment that CheckLauncherEnv looks at.
  static std::map<std::string, std::string> LauncherEnv();

 private:
  int rank_ = 0;
  int size_ = 1;
  int local_rank_ = 0;
  int local_size_ = 1;
  int thread_level_ = MPI_THREAD_SINGLE;
  std::string hostname_;
  std::string single_copy_;
  bool initialised_here_ = false;
};

}  // namespace lcl::cluster
