// watchdog_probe: the last rank never joins the second collective. Run under mpirun by watchdog_test.sh, which
// checks that every rank exits non-zero shortly after the timeout with the watchdog's report.
//   watchdog_probe <timeout_ms>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "cluster/logging.h"
#include "cluster/mpi_communicator.h"
#include "cluster/mpi_session.h"
#include "cluster/watchdog.h"

int main(int argc, char** argv) {
  lcl::cluster::MpiSession mpi(&argc, &argv);
  lcl::cluster::InitLogging(argv[0], mpi.rank(), mpi.size(), "");
  const int timeout_ms = argc > 1 ? std::atoi(argv[1]) : 2000;
  lcl::cluster::Watchdog dog(mpi.rank(), std::chrono::milliseconds(timeout_ms));
  lcl::cluster::MpiCommunicator comm(MPI_COMM_WORLD, "world", &dog);
  torch::Tensor t = torch::ones({1024});
  comm.AllReduce(t, lcl::cluster::ReduceOp::kSum);  // seq 0: everyone joins
  if (mpi.rank() == mpi.size() - 1) {
    std::this_thread::sleep_for(std::chrono::seconds(120));  // never joins seq 1
  } else {
    comm.AllReduce(t, lcl::cluster::ReduceOp::kSum);  // seq 1: hangs without the watchdog
  }
  std::printf("rank %d: unreachable: the collective should not have completed\n", mpi.rank());
  return 0;
}
