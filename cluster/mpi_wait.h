// How a rank waits for an MPI operation (parallel.wait). Open MPI's blocking calls and MPI_Wait poll the network
// and shared memory in a loop: a rank that waits for a slower or stopped peer holds a whole core the whole time,
// and on a machine with as many ranks as cores it takes that core from the rank it waits for. kSleep tests the
// request instead, spinning only for the first microseconds (a collective whose peers are there completes in
// that time), then yielding, then sleeping between tests, so a long wait costs a few percent of one core.
//
//   MPI_Request req;
//   MPI_Iallreduce(MPI_IN_PLACE, buf, n, MPI_FLOAT, MPI_SUM, comm, &req);
//   LCL_MPI_CHECK(WaitForRequest(&req, WaitMode::kSleep));
#pragma once

#include <mpi.h>

#include <string>

namespace lcl::cluster {

enum class WaitMode {
  kSleep,  // test; spin ~50 us, yield until ~1 ms, then sleep 50 us between tests (the default)
  kSpin,   // MPI's own blocking calls and MPI_Wait: lowest latency, one core busy for the whole wait
};

const char* WaitModeName(WaitMode mode);
// "sleep" or "spin"; throws ConfigError naming `field` otherwise.
WaitMode ParseWaitMode(const std::string& text, const std::string& field);

// Completes `*req` (every test drives MPI progress). Returns the MPI error code (MPI_SUCCESS when done).
int WaitForRequest(MPI_Request* req, WaitMode mode);

}  // namespace lcl::cluster
