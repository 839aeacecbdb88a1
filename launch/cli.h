// The `lcl` command tree: each family of subcommands registers itself on the CLI11 app and, when chosen, sets
// the action main runs after parsing. main only parses and dispatches (STYLE.md 10).
//
//   void RegisterBenchCommands(CLI::App& bench, lcl::launch::Launch& launch);  // in cmd_bench.cc
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <memory>

#include "cluster/mpi_session.h"

namespace lcl::launch {

// What a subcommand needs from main: argc/argv for MPI, and where to put the action to run.
struct Launch {
  int* argc = nullptr;
  char*** argv = nullptr;
  // Set by the chosen subcommand's callback; returns the process exit code.
  std::function<int()> action;
  // The MPI session, created on demand by commands that run on ranks (Mpi()); lives until main returns.
  std::unique_ptr<cluster::MpiSession> mpi;
  cluster::MpiSession& Mpi();
};

void RegisterTrainCommands(CLI::App& app, Launch& launch);    // train, eval
void RegisterDataCommands(CLI::App& data, Launch& launch);    // data synth|index|neighbors|episodes
void RegisterModelCommands(CLI::App& model, Launch& launch);  // model init|export-hf
void RegisterCkptCommands(CLI::App& ckpt, Launch& launch);    // ckpt list|verify|inspect
void RegisterBenchCommands(CLI::App& bench, Launch& launch);  // bench comm|data|model|train|ckpt
void RegisterReportCommands(CLI::App& app, Launch& launch);   // report

}  // namespace lcl::launch
