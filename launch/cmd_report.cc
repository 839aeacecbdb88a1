// `lcl report RUN_DIR`: a run drawn as PNG figures and one offline index.html. The drawing is launch/report.py
// (matplotlib) run with the project's python; this command finds that python, resolves the run's config if given,
// and passes its exit status on. Reporting is not the training runtime, so it may depend on Python.
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

int Report(const ReportArgs& a) {
  const std::string out = a.out.empty() ? (fs::path(a.run_dir) / "report").string() : a.out;
  const std::string version = cluster::VersionReport();
  const std::string first_line = version.substr(0, version.find('\n'));  // "lcl 0.1.0 (git ..., build type)"
  std::vector<std::string> argv = {a.run_dir, "--out", out, "--lcl-version", first_line};
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
  return RunSourceScript(a.python, "report.py", argv, "matplotlib");
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
