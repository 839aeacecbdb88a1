// SignalWatcher: records SIGTERM and SIGUSR1 (Slurm's preemption and time-limit warnings) so that the training
// loop can act on them at a step boundary. The handler only stores the signal number (async-signal-safe); the
// ranks then agree with ControlPlane::Max(watcher.Pending()) so that a signal seen by any rank is known by all at
// the same step.
//
//   SignalWatcher signals;            // installs the handlers; the destructor restores the old ones
//   if (control.Max(signals.Pending()) != 0) { /* checkpoint and exit with kExitPreempted */ }
#pragma once

#include <csignal>

namespace lcl::cluster {

class SignalWatcher {
 public:
  SignalWatcher();
  ~SignalWatcher();
  SignalWatcher(const SignalWatcher&) = delete;
  SignalWatcher& operator=(const SignalWatcher&) = delete;

  // The last watched signal received since construction or Clear(), 0 if none.
  int Pending() const;
  void Clear();

 private:
  struct sigaction old_term_ {};
  struct sigaction old_usr1_ {};
};

}  // namespace lcl::cluster
