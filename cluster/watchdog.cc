// Watchdog: times collectives and ends the job when one hangs.
#include "cluster/watchdog.h"

#include <algorithm>
#include <cstdlib>
#include <sstream>

#include "cluster/exit_codes.h"
#include "cluster/log.h"
#include "cluster/mpi_session.h"

namespace lcl::cluster {
namespace {
constexpr std::chrono::milliseconds kAbortGrace(1500);
}  // namespace

Watchdog::Watchdog(int rank, std::chrono::milliseconds timeout, FireHandler on_fire)
    : rank_(rank), timeout_(timeout), on_fire_(on_fire ? std::move(on_fire) : FireHandler(&Watchdog::EndJob)) {
  thread_ = std::thread([this] { Run(); });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

uint64_t Watchdog::Begin(const std::string& comm, const char* op, uint64_t seq, int64_t bytes,
                         std::function<bool()> done) {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t token = next_token_++;
  in_flight_[token] = CollectiveRecord{comm, op, seq, bytes, std::chrono::steady_clock::now(), std::move(done)};
  return token;
}

void Watchdog::End(uint64_t token) {
  std::lock_guard<std::mutex> lock(mu_);
  in_flight_.erase(token);
}

size_t Watchdog::InFlight() const {
  std::lock_guard<std::mutex> lock(mu_);
  return in_flight_.size();
}

bool Watchdog::fired() const {
  std::lock_guard<std::mutex> lock(mu_);
  return fired_;
}

void Watchdog::Run() {
  // Poll often enough that a timeout is noticed within ~10% of itself (and at least every second).
  const auto poll = std::min<std::chrono::milliseconds>(
      std::chrono::milliseconds(1000),
      std::max<std::chrono::milliseconds>(std::chrono::milliseconds(10), timeout_ / 10));
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    cv_.wait_for(lock, poll, [this] { return stop_; });
    if (stop_ || fired_) continue;
    // Overdue records that finished unobserved are dropped, not reported.
    while (!in_flight_.empty() && in_flight_.begin()->second.done &&
           std::chrono::steady_clock::now() - in_flight_.begin()->second.start >= timeout_ &&
           in_flight_.begin()->second.done()) {
      in_flight_.erase(in_flight_.begin());
    }
    if (in_flight_.empty()) continue;
    const CollectiveRecord oldest = in_flight_.begin()->second;
    const auto waited = std::chrono::steady_clock::now() - oldest.start;
    if (waited < timeout_) continue;
    fired_ = true;
    std::ostringstream report;
    report << "watchdog: rank " << rank_ << ": collective " << oldest.op << " on communicator '" << oldest.comm
           << "' (seq " << oldest.seq << ", " << oldest.bytes << " bytes) did not finish within "
           << std::chrono::duration_cast<std::chrono::milliseconds>(timeout_).count()
           << " ms; a peer rank is dead, stuck or issued collectives in a different order. Ending the job "
              "(exit code "
           << kExitCommTimeout << ").";
    lock.unlock();
    on_fire_(report.str(), oldest);
    lock.lock();
  }
}

void Watchdog::EndJob(const std::string& report, const CollectiveRecord&) {
  LOG(ERROR) << report;
  google::FlushLogFiles(google::GLOG_INFO);
  // The peers stuck in the same collective time out within a poll interval of us: give their watchdogs a
  // moment to log their own reports before MPI_Abort tears every rank down.
  std::this_thread::sleep_for(kAbortGrace);
  // MPI_Abort tears down every rank through mpirun/srun. If it cannot (a broken runtime), leave on our own
  // after a grace period so this process never hangs.
  std::thread([] {
    std::this_thread::sleep_for(std::chrono::seconds(5));
    std::_Exit(kExitCommTimeout);
  }).detach();
  MpiSession::AbortWorld(kExitCommTimeout);
}

}  // namespace lcl::cluster
