// SignalWatcher: SIGTERM/SIGUSR1 recorded in a lock-free atomic.
#include "cluster/signals.h"

#include <atomic>

namespace lcl::cluster {
namespace {
// A signal handler can only reach static storage; one process has one set of handlers anyway.
std::atomic<int> g_pending_signal{0};
static_assert(std::atomic<int>::is_always_lock_free, "the handler needs a lock-free atomic");

void OnSignal(int sig) { g_pending_signal.store(sig); }
}  // namespace

SignalWatcher::SignalWatcher() {
  struct sigaction sa {};
  sa.sa_handler = &OnSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, &old_term_);
  sigaction(SIGUSR1, &sa, &old_usr1_);
}

SignalWatcher::~SignalWatcher() {
  sigaction(SIGTERM, &old_term_, nullptr);
  sigaction(SIGUSR1, &old_usr1_, nullptr);
}

int SignalWatcher::Pending() const { return g_pending_signal.load(); }

void SignalWatcher::Clear() { g_pending_signal.store(0); }

}  // namespace lcl::cluster
