// WaitForRequest: MPI_Test with a spin and sleep back-off.
#include "cluster/mpi_wait.h"

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

int WaitForRequest(MPI_Request* req, WaitMode mode, int64_t bytes) {
  if (mode == WaitMode::kSpin) return MPI_Wait(req, MPI_STATUS_IGNORE);
  using Clock = std::chrono::steady_clock;
  // Testing without a pause first, for as long as moving `bytes` could take: a collective whose peers have arrived
  // finishes within microseconds, and a transfer in progress moves only a few shared-memory fragments per test
  // (without single-copy), so every pause stalls it. Yielding here was tried and measured: on a loaded machine each
  // yield handed the core to another process for a whole time slice, and a 16-32 MiB all-reduce took 40-1,139 ms
  // against 18-66 ms for MPI_Wait (docs/performance.md, "Waiting without burning a core"). 2 ms per MiB is twice
  // what the slowest transport here (shared memory without single-copy, ~1 GB/s) needs; a wait past that is a
  // wait for late peers, and one test per 50 us keeps the protocol moving with the core ~80% free.
  const auto spin_for = std::chrono::microseconds(1000 + 2000 * bytes / (1 << 20));
  constexpr auto kSleep = std::chrono::microseconds(50);
  // A test costs ~10-25 us of CPU here (each runs Open MPI's whole progress loop), so 50 us sleeps still cost
  // ~20% of a core: 20 ms into the sleeping, the peers are clearly late and 1 ms sleeps bring it to ~2%, adding at
  // most 1 ms (under 5%) to a wait already that long.
  constexpr auto kLongSleep = std::chrono::milliseconds(1);
  constexpr auto kLongAfter = std::chrono::milliseconds(20);
  const auto start = Clock::now();
  for (;;) {
    int done = 0;
    const int rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS || done) return rc;
    const auto waited = Clock::now() - start;
    if (waited < spin_for) continue;
    std::this_thread::sleep_for(waited < spin_for + kLongAfter ? kSleep : kLongSleep);
  }
}

}  // namespace lcl::cluster
