// Every process exit code of `lcl`, the one list job scripts and tests rely on (the table in docs/launching.md
// and README's line repeat it). launch/slurm/train.sbatch requeues on kExitPreempted only.
#pragma once

namespace lcl {

constexpr int kExitOk = 0;           // success (training reached its last step; its final save, if any, committed)
constexpr int kExitError = 1;        // a typed lcl::Error: bad config, data, checkpoint, communication (the message
                                     // names which)
constexpr int kExitUsage = 2;        // command-line usage error (CLI11)
constexpr int kExitCommTimeout = 3;  // the watchdog ended the job: a collective did not finish in time
constexpr int kExitSaveFailed = 4;   // the final checkpoint (at the end or after a signal) was not committed
constexpr int kExitPreempted = 42;   // SIGTERM/SIGUSR1: checkpoint committed (or none needed: no step ran yet)
// A rank lost (killed, crashed): mpirun ends the job with that rank's status (137 after kill -9); a survivor
// blocked in a collective is ended by its watchdog with kExitCommTimeout.
// A signal that arrives before main has installed its handlers (while the libraries load, ~1 s) ends the process
// with the shell's 128 + N (143 for SIGTERM, 138 for SIGUSR1): nothing after the newest checkpoint was lost, and
// train.sbatch requeues on those codes too when it forwarded that signal itself.

}  // namespace lcl
