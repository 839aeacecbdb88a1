// The checkpoint benchmark behind `lcl bench ckpt`: save and load throughput of a multi-GB sharded state through
// the full commit protocol, against a raw sequential write + fsync (and read) of the same bytes to the same disk
// in the same run, and the async stall as a fraction of a synchronous save.
//
// Loads are measured twice: from the page cache, and from the disk (both files' pages dropped first with
// posix_fadvise, as after a restart). The stall is what the training loop feels: Save() plus the fence
// (ReleaseState) before the next optimizer step, after a stand-in forward and backward of fixed CPU work (matrix
// products) on the training thread. The stand-in runs once per step length: `step_ms` (fixed lengths, calibrated
// with no save in flight) and the modelled step of a model whose AdamW state is this rank's share (16 bytes per
// parameter: weights, fp32 master, two moments; 6 FLOPs per parameter per token, `step_tokens` tokens per rank).
// How much longer the stand-in took while the writer ran is reported beside each stall. The stand-in optimizer
// step then modifies every saved tensor, and each checkpoint is read back and compared with the state at its step.
//
//   CkptBenchOptions o; o.total_bytes = 2LL << 30; o.dir = "/tmp/lcl-bench";
//   RunCkptBench(o, MPI_COMM_WORLD, std::cout);
#pragma once

#include <mpi.h>

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace lcl::bench {

struct CkptBenchOptions {
  int64_t total_bytes = int64_t{2} << 30;     // the whole state, over all ranks
  std::string dir;                            // where to write (the disk being measured)
  int repeats = 2;                            // the best of each measurement counts
  std::vector<double> step_ms = {500, 2000};  // stand-in forward + backward lengths between a save and the fence
  int64_t step_tokens = 1024;                 // tokens per rank of the modelled step (0: no modelled step)
  int threads = 0;  // torch threads per rank for the stand-in step (0: the cores split over this node's ranks)
  bool json = false;
};

void RunCkptBench(const CkptBenchOptions& options, MPI_Comm comm, std::ostream& out);

}  // namespace lcl::bench
