// Process exit codes that job scripts and tests rely on (documented in docs/launching.md).
#pragma once

namespace lcl {

constexpr int kExitOk = 0;
constexpr int kExitError = 1;          // a typed lcl::Error: bad input, config, data, checkpoint, communication
constexpr int kExitUsage = 2;          // command-line usage error (CLI11)
constexpr int kExitCommTimeout = 3;    // the watchdog ended the job: a collective did not finish in time
constexpr int kExitPreempted = 42;     // checkpoint committed after SIGTERM/SIGUSR1: requeue the job

}  // namespace lcl
