// lcl: the one command-line entry point. main only parses and dispatches; each subcommand family lives in its
// own cmd_*.cc. A typed lcl::Error ends the process with one clear message and a non-zero exit code.
#include <CLI/CLI.hpp>
#include <malloc.h>

#include <cstdio>
#include <iostream>

#include "cluster/errors.h"
#include "cluster/exit_codes.h"
#include "cluster/logging.h"
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

}  // namespace

int main(int argc, char** argv) {
  // Keep freed memory in the heap for reuse instead of returning it to the kernel: image tensors, batches and
  // checkpoint buffers are allocated again every step, and each fresh 4 KiB page costs a fault (on the VMs we
  // measured, a 600 KB image tensor's faults cost more than decoding the JPEG; docs/performance.md).
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  mallopt(M_TOP_PAD, 64 << 20);
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

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
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
