// The communicator benchmark behind `lcl bench comm`: all-reduce, reduce-scatter and all-gather over a range of
// sizes, each timed through lcl's MpiCommunicator and through the raw MPI call in the same run (nccl-tests
// method: warm up, time a loop, take the slowest rank, check the data after timing).
//
//   CommBenchOptions opt; opt.min_bytes = 1 << 10; opt.max_bytes = 256 << 20;
//   RunCommBench(opt, MPI_COMM_WORLD, std::cout);   // rank 0 prints the table (or JSON lines)
#pragma once

#include <mpi.h>

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace lcl::bench {

struct CommBenchOptions {
  int64_t min_bytes = 1 << 10;
  int64_t max_bytes = 256 << 20;
  int warmup = 3;
  // Iterations per measurement scale with 1/size between these bounds, so every size takes similar time.
  int min_iters = 5;
  int max_iters = 200;
  // Rounds that alternate lcl and raw MPI; the best round of each counts (less noise on a shared machine).
  int rounds = 3;
  std::vector<std::string> ops = {"allreduce", "reducescatter", "allgather"};
  bool async = false;  // time the async form (issue + Wait) instead of the blocking one
  bool json = false;
  std::string single_copy;  // MpiSession::single_copy(), printed in the header when set
};

struct CommBenchRow {
  std::string op;
  int64_t bytes = 0;
  double lcl_us = 0, mpi_us = 0;        // time per collective, slowest rank
  double lcl_busbw = 0, mpi_busbw = 0;  // GB/s
  double lcl_algbw = 0;
  bool data_ok = false;
};

// Collective over `comm`. Throws lcl::CommError if a result is wrong. Rank 0 writes the report to `out`.
std::vector<CommBenchRow> RunCommBench(const CommBenchOptions& options, MPI_Comm comm, std::ostream& out);

// Parses "1K", "64MB", "256M", "1048576" into bytes; throws lcl::ConfigError naming `what` otherwise.
int64_t ParseBytes(const std::string& text, const std::string& what);

}  // namespace lcl::bench
