// glog set-up for a rank: every line carries `[rank r/N]`; one log file per rank in `<log_dir>/`; rank 0 echoes
// INFO and above to stderr, other ranks WARNING and above (so a 64-rank job does not print every line 64 times).
//
//   lcl::cluster::InitLogging(argv[0], mpi.rank(), mpi.size(), run_dir + "/logs");
//   LOG(INFO) << "config: ...";   // "I1125 02:29:45.123 123 main.cc:10] [rank 0/4] config: ..."
#pragma once

#include <string>

namespace lcl::cluster {

// Safe to call once per process; a later call only changes the rank, the file and the stderr threshold.
// `log_dir` empty: stderr only. Throws lcl::ConfigError if `log_dir` cannot be created or written.
void InitLogging(const char* argv0, int rank, int size, const std::string& log_dir);
// The file this rank logs to ("" if none).
std::string LogFilePath();
// Flushes the rank's log file (before an abort or exit).
void FlushLogs();

}  // namespace lcl::cluster
