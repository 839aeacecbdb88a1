// lcl: the one command-line entry point. main only parses and dispatches; each subcommand family lives in its
// own cmd_*.cc. A typed lcl::Error ends the process with one clear message and a non-zero exit code.
#include <CLI/CLI.hpp>
#include <malloc.h>

#include <cstdio>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "cluster/errors.h"
#include "cluster/exit_codes.h"
#include "cluster/logging.h"
#include "cluster/signals.h"
#include "cluster/version.h"
#include "launch/cli.h"

namespace {

int Fail(lcl::launch::Launch& launch, const std::string& message) {
  const int rank = launch.mpi ? launch.mpi->rank() : 0;
  const int size = launch.mpi ? launch.mpi->size() : 1;
  std::fprintf(stderr, "lcl: %s%s\n",
               size > 1 ? ("[rank " + std::to_string(rank) + "/" + std::to_string(size) + "] ").c_str() : "",
               message.c_str());
  std::fflush(stderr);
  lcl::cluster::FlushLogs();
  // Other ranks may be waiting for this one inside a collective: end them all rather than let them hang.
  if (size > 1) lcl::cluster::MpiSession::AbortWorld(lcl::kExitError);
  return lcl::kExitError;
}

// The word of the command line that names no subcommand where one is required (CLI11 only says that a subcommand
// is required), as "unknown subcommand 'X' of 'lcl ckpt' (one of: list, verify, inspect)"; "" when there is none.
std::string UnknownSubcommand(CLI::App& app, int argc, char** argv) {
  CLI::App* at = &app;
  std::string path = "lcl";
  for (int i = 1; i < argc; ++i) {
    const std::string word = argv[i];
    if (word.empty() || word[0] == '-') return "";
    const std::vector<CLI::App*> subs = at->get_subcommands([](CLI::App*) { return true; });
    if (subs.empty()) return "";
    std::string names;
    CLI::App* next = nullptr;
    for (CLI::App* sub : subs) {
      names += (names.empty() ? "" : ", ") + sub->get_name();
      if (sub->get_name() == word) next = sub;
    }
    if (!next) return "unknown subcommand '" + word + "' of '" + path + "' (one of: " + names + ")";
    at = next;
    path += " " + word;
  }
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  // Keep freed memory in the heap for reuse instead of returning it to the kernel: image tensors, batches and
  // checkpoint buffers are allocated again every step, and each fresh 4 KiB page costs a fault (on the VMs we
  // measured, a 600 KB image tensor's faults cost more than decoding the JPEG; docs/performance.md).
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  mallopt(M_TOP_PAD, 64 << 20);
  // `lcl train` records SIGTERM/SIGUSR1 from here on, before MPI and any set-up (the job script forwards a
  // preemption warning as soon as the ranks exist); the training loop acts on it at its first step boundary.
  // Other commands keep the default action: a TERM ends them. docs/launching.md: what a signal does, and when.
  std::optional<lcl::cluster::SignalWatcher> train_signals;
  if (argc > 1 && std::string(argv[1]) == "train") train_signals.emplace();
  lcl::launch::Launch launch;
  launch.argc = &argc;
  launch.argv = &argv;

  CLI::App app{"lcl: distributed Link-Context Learning trainer (run under mpirun or srun)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", [] { return lcl::cluster::VersionReport(); });
  lcl::launch::RegisterTrainCommands(app, launch);
  lcl::launch::RegisterDataCommands(
      *app.add_subcommand("data", "ImageNet index, LCL episodes, neighbours, synthetic data")->require_subcommand(1),
      launch);
  lcl::launch::RegisterModelCommands(
      *app.add_subcommand("model", "create, import and export models")->require_subcommand(1), launch);
  lcl::launch::RegisterCkptCommands(
      *app.add_subcommand("ckpt", "list, verify and inspect checkpoints")->require_subcommand(1), launch);
  lcl::launch::RegisterBenchCommands(
      *app.add_subcommand("bench", "benchmarks (each measures a reference in the same run)")->require_subcommand(1),
      launch);
  lcl::launch::RegisterReportCommands(app, launch);
  lcl::launch::RegisterPlanCommands(app, launch);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (const std::string unknown = UnknownSubcommand(app, argc, argv); !unknown.empty()) {
      std::fprintf(stderr, "lcl: %s; see `lcl --help`\n", unknown.c_str());
      return lcl::kExitUsage;
    }
    return app.exit(e) == 0 ? lcl::kExitOk : lcl::kExitUsage;
  }
  try {
    return launch.action ? launch.action() : lcl::kExitOk;
  } catch (const lcl::Error& e) {
    return Fail(launch, std::string(e.kind()) + ": " + e.what());
  } catch (const std::exception& e) {
    return Fail(launch, std::string("internal error: ") + e.what());
  }
}
