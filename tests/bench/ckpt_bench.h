// The checkpoint benchmark behind `lcl bench ckpt`: save and load throughput of a multi-GB sharded state through
// the full commit protocol, against a raw sequential write + fsync (and read) of the same bytes to the same disk
// in the same run, and the async stall as a fraction of a synchronous save. The stall is what the training loop
// feels: Save() plus the fence (ReleaseState) before the next optimizer step, after a stand-in forward and
// backward of `step_ms` of real CPU work; the stand-in optimizer step then modifies every saved tensor, and the
// checkpoint is read back and compared with the state at the save's step.
//
//   CkptBenchOptions o; o.total_bytes = 2LL << 30; o.dir = "/tmp/lcl-bench";
//   RunCkptBench(o, MPI_COMM_WORLD, std::cout);
#pragma once

#include <mpi.h>

#include <cstdint>
#include <ostream>
#include <string>

namespace lcl::bench {

struct CkptBenchOptions {
  int64_t total_bytes = int64_t{2} << 30;  // the whole state, over all ranks
  std::string dir;                          // where to write (the disk being measured)
  int repeats = 2;                          // the best of each measurement counts
  double step_ms = 500;                     // stand-in forward + backward between a save and the optimizer step
  bool json = false;
};

void RunCkptBench(const CkptBenchOptions& options, MPI_Comm comm, std::ostream& out);

}  // namespace lcl::bench
