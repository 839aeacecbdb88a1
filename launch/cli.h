// The `lcl` command tree: each family of subcommands registers itself on the CLI11 app and, when chosen, sets
// the action main runs after parsing. main only parses and dispatches (STYLE.md 10).
//
//   void RegisterBenchCommands(CLI::App& bench, lcl::launch::Launch& launch);  // in cmd_bench.cc
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <memory>
#include <string>
#include <vector>

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

// The python that runs the source tree's helper scripts (report drawing, .bin conversion): `flag` (a --python
// option), else $LCL_PYTHON, else <source>/.venv/bin/python (launch/setup.sh makes it), else python3 on PATH.
std::string FindPython(const std::string& flag);
// Runs <source>/launch/`script` with that python and `args`, sharing this process's stdin/stdout/stderr, and
// returns its exit status. `needs` says what the script needs (e.g. "matplotlib") for the error when python is
// missing. Throws ConfigError when the script or python cannot run or the script dies by a signal.
int RunSourceScript(const std::string& python_flag, const std::string& script, const std::vector<std::string>& args,
                    const std::string& needs);

void RegisterTrainCommands(CLI::App& app, Launch& launch);    // train, eval
void RegisterDataCommands(CLI::App& data, Launch& launch);    // data synth|index|neighbors|episodes|features
void RegisterModelCommands(CLI::App& model, Launch& launch);  // model init|export-hf|forward|convert-bin
void RegisterCkptCommands(CLI::App& ckpt, Launch& launch);    // ckpt list|verify|inspect
void RegisterBenchCommands(CLI::App& bench, Launch& launch);  // bench comm|data|model|train|ckpt
void RegisterReportCommands(CLI::App& app, Launch& launch);   // report
void RegisterPlanCommands(CLI::App& app, Launch& launch);     // plan

}  // namespace lcl::launch
