// `lcl ckpt list|verify|inspect`: a run's checkpoints with their status, checksum and manifest verification
// (non-zero exit naming the bad file or tensor), and a checkpoint's tensors and metadata.
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <set>

#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/checksum.h"
#include "cluster/errors.h"
#include "launch/cli.h"

namespace lcl::launch {
namespace {

int List(const std::string& run_dir) {
  if (!std::filesystem::is_directory(run_dir)) {
    throw ConfigError("lcl ckpt list: run directory '" + run_dir + "' " +
                      (std::filesystem::exists(run_dir) ? "is not a directory" : "does not exist") +
                      "; give the run_dir a training run wrote (it holds checkpoints/)");
  }
  auto all = checkpoint::ListCheckpoints(run_dir);
  if (all.empty()) {
    std::cout << "no checkpoints under " << run_dir << "/checkpoints\n";
    return 0;
  }
  const std::string resume = checkpoint::ResolveResume(run_dir, "auto");
  std::cout << std::left << std::setw(22) << "checkpoint" << std::setw(10) << "step"
            << "status\n";
  for (const auto& c : all) {
    std::cout << std::setw(22) << c.name << std::setw(10) << c.step << c.status
              << (c.path == resume ? "  <- resume" : "") << "\n";
  }
  return 0;
}

int Verify(const std::string& dir) {
  checkpoint::CheckpointReader reader(dir);
  std::vector<std::string> problems = reader.VerifyFiles();
  // Manifest coherence: every shard a tensor names must be a listed file.
  std::set<std::string> files;
  for (const auto& f : reader.manifest().files()) files.insert(f.name());
  for (const auto& t : reader.manifest().tensors()) {
    for (const auto& s : t.shards()) {
      if (!files.count(s.file())) problems.push_back("tensor '" + t.name() + "' names unlisted file " + s.file());
    }
  }
  if (!problems.empty()) {
    std::string all;
    for (const auto& p : problems) all += "\n  " + p;
    throw CheckpointError(dir + " failed verification:" + all);
  }
  std::cout << dir << ": ok (" << reader.manifest().files_size() << " files, " << reader.manifest().tensors_size()
            << " tensors, step " << reader.manifest().step() << ")\n";
  return 0;
}

int Inspect(const std::string& dir) {
  checkpoint::CheckpointReader reader(dir);
  const auto& m = reader.manifest();
  std::cout << "checkpoint " << dir << "\n  format " << m.format_version() << ", step " << m.step()
            << ", optimizer step " << m.optimizer_step() << ", metrics step " << m.metrics_step()
            << "\n  grid world=" << m.grid().world() << " dp=" << m.grid().dp() << " tp=" << m.grid().tp()
            << "\n  sampler epoch " << m.sampler().epoch() << ", next index " << m.sampler().next_index()
            << "\n  written by " << m.lcl_version() << "\n  files:\n";
  for (const auto& f : m.files()) {
    std::cout << "    " << f.name() << "  " << f.size() << " bytes  xxh3 " << checkpoint::HexDigest(f.xxh3())
              << "  (rank " << f.rank() << ")\n";
  }
  std::cout << "  tensors:\n";
  for (const auto& t : m.tensors()) {
    std::cout << "    " << t.name() << "  " << t.dtype() << " [";
    for (int i = 0; i < t.global_shape_size(); ++i) std::cout << (i ? ", " : "") << t.global_shape(i);
    std::cout << "]  " << t.shards_size() << " shard(s)\n";
  }
  for (const auto& [k, v] : m.metadata()) std::cout << "  " << k << ": " << v << "\n";
  return 0;
}

}  // namespace

void RegisterCkptCommands(CLI::App& ckpt, Launch& launch) {
  auto run_dir = std::make_shared<std::string>();
  auto* list = ckpt.add_subcommand("list", "a run's checkpoints: step and status (complete / incomplete)");
  list->add_option("run_dir", *run_dir, "the run directory")->required();
  list->callback([&launch, run_dir] { launch.action = [run_dir] { return List(*run_dir); }; });

  auto step_dir = std::make_shared<std::string>();
  auto* verify = ckpt.add_subcommand("verify", "check every file's size and XXH3 checksum and the manifest");
  verify->add_option("checkpoint", *step_dir, "a step directory (run/checkpoints/step_N)")->required();
  verify->callback([&launch, step_dir] { launch.action = [step_dir] { return Verify(*step_dir); }; });

  auto* inspect = ckpt.add_subcommand("inspect", "print a checkpoint's metadata, files and tensors");
  inspect->add_option("checkpoint", *step_dir, "a step directory (run/checkpoints/step_N)")->required();
  inspect->callback([&launch, step_dir] { launch.action = [step_dir] { return Inspect(*step_dir); }; });
}

}  // namespace lcl::launch
