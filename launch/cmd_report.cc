// `lcl report RUN_DIR`: a run drawn as PNG figures and one offline index.html. The drawing is launch/report.py
// (matplotlib) run with the project's python; this command finds that python, resolves the run's config if given,
// and passes its exit status on. Reporting is not the training runtime, so it may depend on Python.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "cluster/errors.h"
#include "cluster/exit_codes.h"
#include "cluster/version.h"
#include "launch/cli.h"
#include "trainer/train_config.h"

extern char** environ;

namespace lcl::launch {
namespace {

namespace fs = std::filesystem;

struct ReportArgs {
  std::string run_dir;
  std::string out;  // default RUN_DIR/report
  std::string python;
  std::string config;
  std::vector<std::string> overrides;
};

bool IsExecutable(const std::string& path) { return access(path.c_str(), X_OK) == 0; }

// --python, else $LCL_PYTHON, else the project's venv (launch/setup.sh makes it), else python3 on PATH.
std::string FindPython(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* env = std::getenv("LCL_PYTHON"); env != nullptr && *env != '\0') return env;
  const std::string venv = std::string(LCL_SOURCE_DIR) + "/.venv/bin/python";
  if (IsExecutable(venv)) return venv;
  return "python3";
}

// Runs argv with this process's stdin/stdout/stderr; returns its exit status.
int RunChild(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::cout.flush();
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, args[0], nullptr, nullptr, args.data(), environ);
  if (rc != 0) {
    throw ConfigError("cannot run python '" + argv[0] + "' (" + std::strerror(rc) +
                      "): install python3 with matplotlib (launch/setup.sh makes .venv from "
                      "launch/requirements.txt), or name one with --python or LCL_PYTHON");
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw ConfigError(std::string("waiting for the report script: ") + std::strerror(errno));
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  throw ConfigError("the report script (" + argv[1] + ") was ended by signal " + std::to_string(WTERMSIG(status)));
}

int Report(const ReportArgs& a) {
  const std::string script = std::string(LCL_SOURCE_DIR) + "/launch/report.py";
  if (!fs::exists(script)) {
    throw ConfigError("the report script " + script + " is missing: lcl report runs it from the source tree " +
                      "this lcl was built from");
  }
  const std::string out = a.out.empty() ? (fs::path(a.run_dir) / "report").string() : a.out;
  const std::string version = cluster::VersionReport();
  const std::string first_line = version.substr(0, version.find('\n'));  // "lcl 0.1.0 (git ..., build type)"
  std::vector<std::string> argv = {FindPython(a.python), script, a.run_dir, "--out", out, "--lcl-version", first_line};
  if (!a.config.empty()) {
    // The config as the run saw it: every field, defaults included, with the same --set overrides.
    std::vector<std::string> overrides = a.overrides;
    overrides.push_back("run_dir=" + a.run_dir);  // as `lcl train --run-dir` sets it
    trainer::LoadedConfig loaded = trainer::LoadTrainConfig(a.config, overrides);
    fs::create_directories(out);
    const std::string path = (fs::path(out) / "config.pbtxt").string();
    std::ofstream f(path);
    f << trainer::ConfigText(loaded.config);
    if (!f) throw ConfigError("cannot write " + path + ": is --out writable?");
    argv.insert(argv.end(), {"--config-text", path});
  }
  return RunChild(argv);
}

}  // namespace

void RegisterReportCommands(CLI::App& app, Launch& launch) {
  auto args = std::make_shared<ReportArgs>();
  auto* report = app.add_subcommand(
      "report", "draw a run: loss, learning rate, throughput, accuracy figures (PNG) and index.html");
  report->add_option("run_dir", args->run_dir, "the run directory (metrics.jsonl, eval.jsonl, logs/)")->required();
  report->add_option("--out", args->out, "where the figures and index.html go (default RUN_DIR/report)");
  report->add_option("--python", args->python,
                     "python with matplotlib (default: $LCL_PYTHON, else <source>/.venv/bin/python, else python3)");
  report->add_option("--config", args->config,
                     "the run's config, to show it resolved (every field) in index.html; with its --set overrides");
  report->add_option("--set", args->overrides, "an override the run was given: path.to.field=value (repeatable)");
  report->callback([&launch, args] { launch.action = [args] { return Report(*args); }; });
}

}  // namespace lcl::launch
