// How a rank waits for an MPI operation (parallel.wait). Open MPI's blocking calls and MPI_Wait poll the network
// and shared memory in a loop: a rank that waits for a slower or stopped peer holds a whole core the whole time,
// and on a machine with as many ranks as cores it takes that core from the rank it waits for. kSleep tests the
// request instead: back to back for as long as moving `bytes` could take (a collective whose peers are there
// completes in that time, and a transfer in progress needs a test per shared-memory fragment round, so any pause
// between them slows it), then sleeping 50 us between tests, and 1 ms once that has gone on for 20 ms: by then the
// peers are late, and a long wait costs a few percent of one core.
//
//   MPI_Request req;
//   MPI_Iallreduce(MPI_IN_PLACE, buf, n, MPI_FLOAT, MPI_SUM, comm, &req);
//   LCL_MPI_CHECK(WaitForRequest(&req, WaitMode::kSleep));
#pragma once

#include <mpi.h>

#include <cstdint>
#include <string>

namespace lcl::cluster {

enum class WaitMode {
  kSleep,  // test; spin for 1 ms + 2 ms per MiB, then sleep 50 us, later 1 ms, between tests
  kSpin,   // MPI's own blocking calls and MPI_Wait: lowest latency, one core busy for the whole wait
};

const char* WaitModeName(WaitMode mode);
// "sleep" or "spin"; throws ConfigError naming `field` otherwise.
WaitMode ParseWaitMode(const std::string& text, const std::string& field);

// Completes `*req` (every test drives MPI progress), an operation moving `bytes` per rank. Returns the MPI error
// code (MPI_SUCCESS when done).
int WaitForRequest(MPI_Request* req, WaitMode mode, int64_t bytes = 0);

}  // namespace lcl::cluster
