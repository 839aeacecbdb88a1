// WaitForRequest: MPI_Test with a spin, yield and sleep back-off.
#include "cluster/mpi_wait.h"

#include <sched.h>

#include <chrono>
#include <thread>

#include "cluster/errors.h"

namespace lcl::cluster {

const char* WaitModeName(WaitMode mode) { return mode == WaitMode::kSpin ? "spin" : "sleep"; }

WaitMode ParseWaitMode(const std::string& text, const std::string& field) {
  if (text == "sleep") return WaitMode::kSleep;
  if (text == "spin") return WaitMode::kSpin;
  throw ConfigError(field + " is '" + text +
                    "'; use sleep (a waiting rank leaves its core to the others) or spin (MPI's busy wait)");
}

int WaitForRequest(MPI_Request* req, WaitMode mode) {
  if (mode == WaitMode::kSpin) return MPI_Wait(req, MPI_STATUS_IGNORE);
  using Clock = std::chrono::steady_clock;
  // Spinning first: a collective whose peers have arrived finishes within microseconds, and a sleep would add its
  // whole length to the latency. Past the spin the peers are late, and each test only needs to move the protocol
  // along: one test per 50 us still keeps a shared-memory transfer streaming (each test drains the fragments that
  // arrived) while the core is free ~98% of the time.
  constexpr auto kSpinFor = std::chrono::microseconds(50);
  constexpr auto kYieldFor = std::chrono::milliseconds(1);
  constexpr auto kSleep = std::chrono::microseconds(50);
  const auto start = Clock::now();
  for (;;) {
    int done = 0;
    const int rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS || done) return rc;
    const auto waited = Clock::now() - start;
    if (waited < kSpinFor) continue;
    if (waited < kYieldFor) {
      sched_yield();
    } else {
      std::this_thread::sleep_for(kSleep);
    }
  }
}

}  // namespace lcl::cluster
