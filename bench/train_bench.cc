// `lcl bench train`: whole training steps of `lcl train` under mpirun against PyTorch DDP (gloo)
// training the same model on the same shapes, both launched as child processes by this driver.
#include "bench/train_bench.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "bench/mfu.h"
#include "cluster/errors.h"
#include "cluster/mpi_session.h"
#include "cluster/version.h"
#include "lcl/build_info.h"

extern char** environ;

namespace lcl::bench {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int kSeed = 1234;
constexpr int kMaxLength = 12288;  // the trainer's default: a 16-shot episode at 256 tokens per image fits
// One optimizer for both sides: AdamW, constant LR (no warmup, min_lr = lr), no weight decay, clip
// at 1.
constexpr double kLr = 1e-4, kClip = 1.0;

std::vector<std::string> SplitWords(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

std::string Join(const std::vector<std::string>& words) {
  std::string s;
  for (const std::string& w : words) s += (s.empty() ? "" : " ") + w;
  return s;
}

std::string Tail(const std::string& path, size_t bytes = 3000) {
  std::ifstream in(path, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return text.size() > bytes ? "..." + text.substr(text.size() - bytes) : text;
}

// Runs `argv` (PATH lookup) with stdout and stderr into `log` and waits; a non-zero exit throws
// with the log's tail.
void RunChild(const std::vector<std::string>& argv, const std::string& log, const std::string& what) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    throw Error("bench train: " + what + ": cannot start '" + argv[0] + "': " + std::strerror(rc) +
                " (set --mpirun / --python, or LCL_MPIRUN / LCL_PYTHON)");
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw Error("bench train: waitpid: " + std::string(std::strerror(errno)));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    const std::string how = WIFEXITED(status) ? "exit code " + std::to_string(WEXITSTATUS(status))
                                              : "signal " + std::to_string(WTERMSIG(status));
    throw Error("bench train: " + what + " failed (" + how + ")\n  command: " + Join(argv) + "\n  log " + log +
                ", last lines:\n" + Tail(log));
  }
}

// ---- the shapes of our run, from the rendered episodes
// ------------------------------------------------

struct Episode {
  int64_t tokens = 0;  // every input token, image placeholders included, no padding
  int64_t images = 0;
};

std::string TrainConfigText(const TrainBenchOptions& o, const std::string& work, const std::string& model,
                            const std::string& run_dir, int np, bool zero1, int steps);

// Global episodes 0, 1, ... exactly as `lcl train` builds them: rendered by `lcl data episodes` from the same
// generated config and --set overrides (pairs, tokenizer, recipe, templates, shot, seed, max_length).
std::vector<Episode> RenderEpisodes(const TrainBenchOptions& o, const std::string& work, const std::string& model,
                                    int64_t patches, int64_t count) {
  const std::string name = fs::path(model).filename().string();
  const std::string log = work + "/logs/episodes_" + name + ".jsonl";
  const std::string config = work + "/configs/episodes_" + name + ".pbtxt";
  std::ofstream(config) << TrainConfigText(o, work, model, work + "/runs/episodes", 1, true, 1);
  std::vector<std::string> argv = {o.lcl, "data", "episodes", "--config", config, "--count", std::to_string(count)};
  for (const std::string& set : o.lcl_overrides) {
    argv.push_back("--set");
    argv.push_back(set);
  }
  RunChild(argv, log, "lcl data episodes");
  std::vector<Episode> episodes;
  std::ifstream in(log);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] != '{') continue;
    const json j = json::parse(line);
    episodes.push_back(
        {j.at("tokens").at("total").get<int64_t>(), j.at("tokens").at("image").get<int64_t>() / (patches + 2)});
  }
  if (int64_t(episodes.size()) != count) {
    throw Error("bench train: lcl data episodes wrote " + std::to_string(episodes.size()) + " episodes, expected " +
                std::to_string(count) + " (" + log + ")");
  }
  return episodes;
}

struct Shape {
  double padded_len = 0;       // mean over measured steps and ranks of the micro-batch's padded length
  double images = 0;           // mean images per episode
  double tokens_per_step = 0;  // mean over measured steps, all ranks, padding excluded
};

// DP rank r of `np` takes global indices r, r + np, ... of each step's global batch (one
// micro-batch per step).
Shape ShapeOf(const std::vector<Episode>& episodes, const TrainBenchOptions& o, int np) {
  const int64_t global = int64_t{o.micro_batch} * np;
  Shape s;
  double n_micro = 0, n_episodes = 0;
  for (int64_t step = o.warmup; step < o.warmup + o.steps; ++step) {
    for (int r = 0; r < np; ++r) {
      int64_t longest = 0;
      for (int64_t j = 0; j < o.micro_batch; ++j) {
        const Episode& e = episodes.at(size_t(step * global + r + j * np));
        longest = std::max(longest, e.tokens);
        s.tokens_per_step += double(e.tokens);
        s.images += double(e.images);
        ++n_episodes;
      }
      s.padded_len += double(longest);
      ++n_micro;
    }
  }
  s.padded_len /= n_micro;
  s.images /= n_episodes;
  s.tokens_per_step /= o.steps;
  return s;
}

// ---- one lcl run
// ------------------------------------------------------------------------------------

struct LclRun {
  double tokens_per_sec = 0, step_ms = 0, tokens_per_step = 0;
  double data_wait_ms = 0, forward_ms = 0, backward_ms = 0, sync_wait_ms = 0, optimizer_ms = 0;
  std::map<int64_t, double> max_rss_mb;  // step -> the largest rank's peak RSS so far
};

std::string TrainConfigText(const TrainBenchOptions& o, const std::string& work, const std::string& model,
                            const std::string& run_dir, int np, bool zero1, int steps) {
  std::ostringstream c;
  c << "# generated by lcl bench train\n"
    << "run_dir: \"" << run_dir << "\"\nseed: " << kSeed << "\n"
    << "model { path: \"" << model << "\" }\n"
    << "data { root: \"" << work << "/synth\" recipe: \"" << o.recipe << "\" policy: \"2way_weight\" shot: " << o.shot
    << " max_length: " << kMaxLength << " workers: 1 prefetch: 2 }\n"
    << "parallel { tp: 1 zero1: " << (zero1 ? "true" : "false") << " threads: " << o.threads << " }\n"
    << "batch { micro_batch: " << o.micro_batch << " global_batch: " << o.micro_batch * np << " }\n"
    << "optimizer { lr: " << kLr << " min_lr: " << kLr << " warmup_ratio: 0 weight_decay: 0 clip_norm: " << kClip
    << " }\n"
    << "schedule { total_steps: " << steps << " }\n"
    << "logging { every_steps: 1 tensorboard: false progress: false }\n"
    << "eval { at_end: false }\n"
    << "checkpoint { every_steps: 0 at_end: false }\n";
  return c.str();
}

LclRun RunLcl(const TrainBenchOptions& o, const std::vector<std::string>& mpirun, const std::string& work,
              const std::string& preset, int np, bool zero1, int steps) {
  const std::string name = preset + "_np" + std::to_string(np) + (zero1 ? "_zero1" : "_nozero1");
  const std::string run_dir = work + "/runs/" + name, config = work + "/configs/" + name + ".pbtxt";
  fs::remove_all(run_dir);
  std::ofstream(config) << TrainConfigText(o, work, work + "/" + preset + "-model", run_dir, np, zero1, steps);
  std::vector<std::string> argv = mpirun;
  for (const std::string& a :
       {std::string("-np"), std::to_string(np), o.lcl, std::string("train"), std::string("--config"), config})
    argv.push_back(a);
  for (const std::string& set : o.lcl_overrides) {
    argv.push_back("--set");
    argv.push_back(set);
  }
  RunChild(argv, work + "/logs/" + name + ".log", "lcl train (" + name + ")");

  LclRun r;
  std::ifstream in(run_dir + "/metrics.jsonl");
  int n = 0;
  for (std::string line; std::getline(in, line);) {
    const json j = json::parse(line);
    if (!j.contains("step") || !j.contains("step_time_ms")) continue;  // eval rows, if any
    const int64_t step = j.at("step").get<int64_t>();
    if (j.contains("max_rss_mb")) r.max_rss_mb[step] = j.at("max_rss_mb").get<double>();
    if (step <= o.warmup) continue;
    ++n;
    const double ms = j.at("step_time_ms").get<double>();
    r.step_ms += ms;
    r.tokens_per_step += j.at("tokens_per_sec").get<double>() * ms / 1e3;
    r.data_wait_ms += j.value("data_wait_ms", 0.0);
    r.forward_ms += j.value("forward_ms", 0.0);
    r.backward_ms += j.value("backward_ms", 0.0);
    r.sync_wait_ms += j.value("sync_wait_ms", 0.0);
    r.optimizer_ms += j.value("optimizer_ms", 0.0);
  }
  if (n == 0) throw Error("bench train: no measured step in " + run_dir + "/metrics.jsonl");
  for (double* v : {&r.step_ms, &r.tokens_per_step, &r.data_wait_ms, &r.forward_ms, &r.backward_ms, &r.sync_wait_ms,
                    &r.optimizer_ms})
    *v /= n;
  r.tokens_per_sec = r.tokens_per_step / (r.step_ms / 1e3);
  return r;
}

// ---- the PyTorch reference
// --------------------------------------------------------------------------

json RunReference(const TrainBenchOptions& o, const std::vector<std::string>& mpirun, const std::string& work,
                  const std::string& preset, int np, const Shape& shape, const std::string& variant) {
  const std::string name = preset + "_np" + std::to_string(np) + "_pytorch_" + variant;
  // The ranks meet through a file, not a TCP port: a port picked here can be taken by any other
  // process on the machine by the time rank 0 binds it (CI once failed that way).
  const std::string rendezvous = work + "/logs/" + name + ".rendezvous";
  fs::remove(rendezvous);
  std::vector<std::string> argv = mpirun;
  const std::vector<std::string> rest = {"-np",
                                         std::to_string(np),
                                         o.python,
                                         o.reference_script,
                                         "--model",
                                         work + "/" + preset + "-model",
                                         "--micro-batch",
                                         std::to_string(o.micro_batch),
                                         "--seq-len",
                                         std::to_string(std::lround(shape.padded_len)),
                                         "--images",
                                         std::to_string(std::lround(shape.images)),
                                         "--steps",
                                         std::to_string(o.steps),
                                         "--warmup",
                                         std::to_string(o.warmup),
                                         "--threads",
                                         std::to_string(o.threads),
                                         "--rendezvous",
                                         rendezvous,
                                         "--lr",
                                         std::to_string(kLr),
                                         "--weight-decay",
                                         "0",
                                         "--clip",
                                         std::to_string(kClip),
                                         "--seed",
                                         std::to_string(kSeed)};
  if (variant == "ddp-tcmalloc") {
    // The same PyTorch DDP on the malloc lcl runs on: mpirun's -x sets it for every rank (before -np).
    const std::vector<std::string> preload = {"-x", "LD_PRELOAD=" + lcl::cluster::TcmallocLibraryPath()};
    argv.insert(argv.end(), preload.begin(), preload.end());
  }
  argv.insert(argv.end(), rest.begin(), rest.end());
  if (variant == "compile") argv.push_back("--compile");
  const std::string log = work + "/logs/" + name + ".log";
  RunChild(argv, log, "PyTorch reference (" + name + ")");
  std::ifstream in(log);
  json result;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("{", 0) == 0 && line.find("\"train_reference\"") != std::string::npos) result = json::parse(line);
  }
  if (result.is_null()) throw Error("bench train: no result line from the PyTorch reference in " + log);
  return result;
}

// ---- preparation
// ------------------------------------------------------------------------------------

void Prepare(const TrainBenchOptions& o, const std::string& work) {
  for (const char* sub : {"logs", "configs", "runs"}) fs::create_directories(work + "/" + sub);
  if (!fs::exists(work + "/synth/train_pairs.jsonl")) {
    std::cerr << "bench train: synthesising data in " << work << "/synth\n";
    fs::remove_all(work + "/synth");
    RunChild({o.lcl, "data", "synth", "--out", work + "/synth", "--classes", "64", "--images-per-class", "40", "--size",
              "96x96"},
             work + "/logs/synth.log", "lcl data synth");
  }
  // The tokenizer's corpus: class names (as launch/quickstart.sh does).
  const std::string names = work + "/class_names.txt";
  if (!fs::exists(names)) {
    std::ifstream in(work + "/synth/LOC_synset_mapping.txt");
    std::ofstream out(names);
    for (std::string line; std::getline(in, line);) {
      std::string name = line.substr(line.find(' ') + 1);
      out << name.substr(0, name.find(',')) << "\n";
    }
  }
  for (const std::string& preset : o.presets) {
    const std::string dir = work + "/" + preset + "-model";
    if (fs::exists(dir + "/config.json") && fs::exists(dir + "/tokenizer.model")) continue;
    std::cerr << "bench train: lcl model init --preset " << preset << "\n";
    fs::remove_all(dir);
    RunChild({o.lcl, "model", "init", "--preset", preset, "--out", dir, "--class-names", names},
             work + "/logs/init_" + preset + ".log", "lcl model init --preset " + preset);
  }
}

int64_t PatchesOf(const std::string& model) {
  std::ifstream in(model + "/config.json");
  const json c = json::parse(in);
  const json& v = c.at("vision_config");
  const int64_t side = v.at("image_size").get<int64_t>() / v.at("patch_size").get<int64_t>();
  return side * side;
}

// ---- report
// -----------------------------------------------------------------------------------------

struct Row {
  std::string preset;
  int np = 1;
  Shape shape;
  LclRun lcl;
  json ref;  // the first reference (ddp unless --reference says otherwise)
  double ref_tokens_per_sec = 0;
  std::map<std::string, json> refs;  // every reference by name, the first included
  std::map<std::string, double> refs_tokens_per_sec;
  double flops_per_step = 0;  // model FLOPs of one step over all ranks (ModelFlops)
  double peak_flops = 0;      // fp32 matmul FLOP/s of np ranks' threads, measured in this run
};

void Emit(std::ostream& out, const TrainBenchOptions& o, const std::string& name, double value, const std::string& unit,
          double reference, const std::string& ref_name, const json& config) {
  if (!o.json) return;
  json j = {{"name", name},
            {"value", value},
            {"unit", unit},
            {"reference", reference},
            {"reference_name", ref_name},
            {"ratio", reference > 0 ? value / reference : 0.0},
            {"config", config}};
  out << j.dump() << "\n" << std::flush;
}

json ConfigOf(const TrainBenchOptions& o, const Row& r) {
  return {{"preset", r.preset},
          {"ranks", r.np},
          {"dp", r.np},
          {"tp", 1},
          {"threads_per_rank", o.threads},
          {"micro_batch", o.micro_batch},
          {"global_batch", o.micro_batch * r.np},
          {"shot", o.shot},
          {"images_per_episode", r.shape.images},
          {"seq_len_padded_mean", r.shape.padded_len},
          {"tokens_per_step", r.shape.tokens_per_step},
          {"steps", o.steps},
          {"warmup", o.warmup},
          {"zero1", true},
          {"optimizer", "AdamW lr 1e-4 const, wd 0, clip 1.0, fp32 CPU"},
          {"parameters", r.ref.value("parameters", 0)},
          {"trainable_parameters", r.ref.value("trainable_parameters", 0)},
          {"reference_framework", r.ref.value("framework", "")}};
}

std::string ReferenceName(const std::string& variant) {
  if (variant == "compile") return "PyTorch DDP (gloo) + torch.compile";
  if (variant == "ddp-tcmalloc") return "PyTorch DDP (gloo) on tcmalloc";
  return "PyTorch DDP (gloo)";
}

void EmitRow(std::ostream& out, const TrainBenchOptions& o, const Row& r) {
  json c = ConfigOf(o, r);
  c["recipe"] = o.recipe;
  c["model_flops_per_step"] = r.flops_per_step;
  c["matmul_peak_flops"] = r.peak_flops;
  // train.<preset>.np<N>. as before; a recipe or shot other than the defaults is named in between.
  const std::string p = "train." + r.preset + (o.recipe == "lcl" ? "" : "." + o.recipe) +
                        (o.shot == 4 ? "" : ".shot" + std::to_string(o.shot)) + ".np" + std::to_string(r.np) + ".";
  for (const auto& [variant, ref] : r.refs) {
    const std::string suffix = variant == "ddp" ? "" : "_vs_" + variant;
    Emit(out, o, p + "tokens_per_sec" + suffix, r.lcl.tokens_per_sec, "tokens/s", r.refs_tokens_per_sec.at(variant),
         ReferenceName(variant), c);
    Emit(out, o, p + "step_time_ms" + suffix, r.lcl.step_ms, "ms", ref.at("step_time_ms").get<double>(),
         ReferenceName(variant), c);
    Emit(out, o, p + "mfu" + suffix, r.flops_per_step / (r.lcl.step_ms / 1e3) / r.peak_flops, "fraction",
         r.flops_per_step / (ref.at("step_time_ms").get<double>() / 1e3) / r.peak_flops, ReferenceName(variant), c);
  }
  const std::pair<const char*, double> parts[] = {{"data_wait_ms", r.lcl.data_wait_ms},
                                                  {"forward_ms", r.lcl.forward_ms},
                                                  {"backward_ms", r.lcl.backward_ms},
                                                  {"exposed_comm_ms", r.lcl.sync_wait_ms},
                                                  {"optimizer_ms", r.lcl.optimizer_ms}};
  for (const auto& [part, ms] : parts) Emit(out, o, p + part, ms, "ms", r.lcl.step_ms, "lcl step time", c);
  const double rss = r.lcl.max_rss_mb.empty() ? 0 : r.lcl.max_rss_mb.rbegin()->second;
  Emit(out, o, p + "peak_rss_mb", rss, "MiB", r.ref.at("peak_rss_mib").get<double>(),
       ReferenceName(o.references.front()), c);
}

// What lcl's ranks will use for Open MPI's shared-memory single copy (see MpiSession::single_copy).
std::string SingleCopyOfTheRanks(const TrainBenchOptions& o) {
  if (o.mpirun.find("single_copy_mechanism") != std::string::npos) return "as --mpirun sets it";
  const int most = *std::max_element(o.ranks.begin(), o.ranks.end());
  return cluster::MpiSession::ChooseSingleCopy(most, /*apply=*/false);
}

void PrintTable(std::ostream& out, const TrainBenchOptions& o, const std::vector<Row>& rows,
                const std::vector<std::string>& extra) {
  if (o.json) return;
  char line[640];
  out << "# lcl bench train: " << o.threads << " thread(s) per rank, micro-batch " << o.micro_batch
      << " episode(s) per rank, shot " << o.shot << ", recipe " << o.recipe << ", " << o.steps
      << " measured steps after " << o.warmup
      << " warm-up; tokens = all input tokens without padding; references = PyTorch "
      << (rows.empty() ? std::string() : rows.front().ref.value("torch", std::string()))
      << " DDP (gloo), same shapes, measured in this run; MFU = model FLOPs/s over the fp32 matmul peak of the same "
         "cores (measured in this run";
  if (!rows.empty()) {
    for (const auto& r : rows) {
      if (r.preset != rows.front().preset) break;
      std::snprintf(line, sizeof(line), "%s np %d: %.1f GFLOP/s", r.np == rows.front().np ? ":" : ",", r.np,
                    r.peak_flops / 1e9);
      out << line;
    }
  }
  out << ")\n# lcl's shared-memory single copy: " << SingleCopyOfTheRanks(o)
      << "; PyTorch's gloo moves bytes over TCP\n";
  std::snprintf(line, sizeof(line), "%-6s %3s %7s %10s %-8s %10s %6s %6s %6s %9s %8s %8s %8s %8s %8s %9s %9s\n",
                "preset", "np", "seq", "lcl tok/s", "ref", "ref tok/s", "ratio", "MFU", "refMFU", "step ms", "data",
                "fwd", "bwd", "comm", "optim", "RSS MiB", "ref RSS");
  out << line;
  for (const Row& r : rows) {
    for (const auto& [variant, ref] : r.refs) {
      const double ref_ms = ref.at("step_time_ms").get<double>();
      std::snprintf(line, sizeof(line),
                    "%-6s %3d %7.1f %10.1f %-8s %10.1f %6.3f %6.3f %6.3f %9.1f %8.1f %8.1f %8.1f %8.1f %8.1f %9.1f "
                    "%9.1f\n",
                    r.preset.c_str(), r.np, r.shape.padded_len, r.lcl.tokens_per_sec, variant.c_str(),
                    r.refs_tokens_per_sec.at(variant), r.lcl.tokens_per_sec / r.refs_tokens_per_sec.at(variant),
                    r.flops_per_step / (r.lcl.step_ms / 1e3) / r.peak_flops,
                    r.flops_per_step / (ref_ms / 1e3) / r.peak_flops, r.lcl.step_ms, r.lcl.data_wait_ms,
                    r.lcl.forward_ms, r.lcl.backward_ms, r.lcl.sync_wait_ms, r.lcl.optimizer_ms,
                    r.lcl.max_rss_mb.empty() ? 0.0 : r.lcl.max_rss_mb.rbegin()->second,
                    ref.at("peak_rss_mib").get<double>());
      out << line;
    }
  }
  for (const std::string& e : extra) out << e << "\n";
}

void ResolveOptions(TrainBenchOptions& o) {
  for (const std::string& variant : o.references) {
    if (variant != "ddp" && variant != "compile" && variant != "ddp-tcmalloc") {
      throw ConfigError("bench train: --reference '" + variant + "' is not one of ddp, compile, ddp-tcmalloc");
    }
    if (variant == "ddp-tcmalloc" && lcl::cluster::TcmallocLibraryPath().empty()) {
      throw ConfigError(
          "bench train: --reference ddp-tcmalloc preloads the tcmalloc lcl runs on, and this lcl runs on " +
          lcl::cluster::MallocName() + "; rebuild with libgoogle-perftools-dev installed, or drop it");
    }
  }
  if (o.recipe != "lcl" && o.recipe != "official") {
    throw ConfigError("bench train: --recipe '" + o.recipe + "' is not one of lcl, official");
  }
  if (o.steps < 1 || o.warmup < 0 || o.micro_batch < 1 || o.shot < 1 || o.threads < 1 || o.presets.empty() ||
      o.ranks.empty() || o.references.empty()) {
    throw ConfigError(
        "bench train: need --steps >= 1, --warmup >= 0, --micro-batch >= 1, --shot >= 1, "
        "--threads >= 1 and at least one preset and rank count");
  }
  for (int np : o.ranks) {
    if (np < 1) throw ConfigError("bench train: --ranks must be positive, got " + std::to_string(np));
  }
  if (const char* world = std::getenv("OMPI_COMM_WORLD_SIZE"); world && std::atoi(world) > 1) {
    throw ConfigError("bench train launches mpirun itself: run it as a plain process, not under mpirun");
  }
  if (o.work_dir.empty()) o.work_dir = "/tmp/lcl_bench_train";
  o.work_dir = fs::absolute(o.work_dir).lexically_normal().string();
  if (o.mpirun.empty()) {
    const char* env = std::getenv("LCL_MPIRUN");
    o.mpirun = env && *env ? env : "mpirun --oversubscribe --allow-run-as-root --bind-to none";
  }
  if (o.python.empty()) {
    const char* py = std::getenv("LCL_PYTHON");
    o.python = py && *py ? py : LCL_BUILD_PYTHON;
  }
  if (o.reference_script.empty()) {
    const char* src = std::getenv("LCL_SOURCE_DIR");
    o.reference_script = std::string(src && *src ? src : LCL_BENCH_SOURCE_DIR) + "/bench/train_reference.py";
  }
  if (!fs::exists(o.reference_script)) {
    throw ConfigError("bench train: reference script " + o.reference_script + " not found; pass --reference-script");
  }
  if (o.lcl.empty()) o.lcl = fs::read_symlink("/proc/self/exe").string();
  // Root-safe Open MPI, as the tests' launcher sets it; the caller's values win. The shared-memory single copy is
  // left to lcl's ranks (MpiSession::single_copy: CMA where the kernel allows it, none where it does not), as in a
  // user's run; the header says which.
  setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 0);
  setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 0);
  setenv("OMPI_MCA_rmaps_base_oversubscribe", "1", 0);
}

}  // namespace

int RunTrainBench(const TrainBenchOptions& options, std::ostream& out) {
  TrainBenchOptions o = options;
  ResolveOptions(o);
  const std::vector<std::string> mpirun = SplitWords(o.mpirun);
  const std::string& work = o.work_dir;
  Prepare(o, work);
  const int max_np = *std::max_element(o.ranks.begin(), o.ranks.end());
  // The matmul peak of np ranks' threads, measured here with nothing else of ours running.
  std::map<int, double> peak;
  for (int np : o.ranks) peak[np] = MatmulPeak(o.threads, np);
  std::vector<Row> rows;
  std::vector<std::string> extra;
  for (const std::string& preset : o.presets) {
    const std::string model = work + "/" + preset + "-model";
    const std::vector<Episode> episodes =
        RenderEpisodes(o, work, model, PatchesOf(model), int64_t{o.warmup + o.steps} * o.micro_batch * max_np);
    std::map<int, const Row*> by_np;
    for (int np : o.ranks) {
      Row r;
      r.preset = preset;
      r.np = np;
      r.shape = ShapeOf(episodes, o, np);
      std::cerr << "bench train: " << preset << " np=" << np << ": lcl train\n";
      r.lcl = RunLcl(o, mpirun, work, preset, np, /*zero1=*/true, o.warmup + o.steps);
      // The episodes replayed here must be the ones the run trained on, or the shapes given to
      // PyTorch are wrong.
      if (std::abs(r.lcl.tokens_per_step - r.shape.tokens_per_step) > 0.01 * r.shape.tokens_per_step) {
        throw Error("bench train: " + preset + " np=" + std::to_string(np) + ": lcl train saw " +
                    std::to_string(r.lcl.tokens_per_step) + " tokens per step, the rendered episodes " +
                    std::to_string(r.shape.tokens_per_step) + "; the episode replay is out of step with the trainer");
      }
      for (const std::string& variant : o.references) {
        std::cerr << "bench train: " << preset << " np=" << np << ": PyTorch reference (" << variant << ")\n";
        r.refs[variant] = RunReference(o, mpirun, work, preset, np, r.shape, variant);
        // Same token count on both sides: the reference trains sequences of the mean padded length,
        // so it does the work of our step; credit it with the same (unpadded) tokens.
        r.refs_tokens_per_sec[variant] =
            r.shape.tokens_per_step / (r.refs[variant].at("step_time_ms").get<double>() / 1e3);
      }
      r.ref = r.refs[o.references.front()];
      r.ref_tokens_per_sec = r.refs_tokens_per_sec[o.references.front()];
      r.flops_per_step = ModelFlops(model, r.shape.padded_len, r.shape.images, o.micro_batch, np);
      r.peak_flops = peak[np];
      rows.push_back(r);
      EmitRow(out, o, rows.back());
    }
    for (const Row& r : rows) {
      if (r.preset == preset) by_np[r.np] = &r;
    }
    if (by_np.count(1) && by_np.count(2)) {
      const Row &a = *by_np[1], &b = *by_np[2];
      const double ours = b.lcl.tokens_per_sec / (2 * a.lcl.tokens_per_sec);
      const double theirs = b.ref_tokens_per_sec / (2 * a.ref_tokens_per_sec);  // the first reference
      // What the machine itself gives: two ranks' matmul peak over twice one rank's (cores that share execution
      // units, or a host that does not give a VM's vCPUs whole cores, show here, whatever the trainer does).
      const double machine = b.peak_flops / (2 * a.peak_flops);
      json c = ConfigOf(o, b);
      c["pytorch_weak_scaling"] = theirs;
      c["matmul_weak_scaling"] = machine;
      Emit(out, o, "train." + preset + ".dp2_weak_scaling", ours, "efficiency", theirs,
           "PyTorch DDP weak scaling, same run", c);
      char line[256];
      std::snprintf(line, sizeof(line),
                    "%s: DP=2 weak-scaling efficiency lcl %.3f, PyTorch DDP %.3f, the machine's own (matmul peak of 2 "
                    "ranks / 2 x 1 rank) %.3f (target >= 0.9)",
                    preset.c_str(), ours, theirs, machine);
      extra.push_back(line);
    }
    if (o.memory) {
      // Peak RSS with ZeRO-1 off against on, at the same step of the same episode stream.
      const int mem_steps = o.warmup + std::min(o.steps, 10);
      std::cerr << "bench train: " << preset << " np=" << max_np << ": lcl train, ZeRO-1 off (memory)\n";
      const LclRun off = RunLcl(o, mpirun, work, preset, max_np, /*zero1=*/false, mem_steps);
      const Row& on_row = *by_np[max_np];
      const auto on = on_row.lcl.max_rss_mb.find(mem_steps), off_at = off.max_rss_mb.find(mem_steps);
      if (on == on_row.lcl.max_rss_mb.end() || off_at == off.max_rss_mb.end()) {
        throw Error("bench train: no max_rss_mb at step " + std::to_string(mem_steps) +
                    " in metrics.jsonl (a trainer without the max_rss_mb metric?)");
      }
      json c = ConfigOf(o, on_row);
      c["steps_measured_for_memory"] = mem_steps;
      c["zero1_off_tokens_per_sec"] = off.tokens_per_sec;
      Emit(out, o, "train." + preset + ".np" + std::to_string(max_np) + ".peak_rss_mb_zero1", on->second, "MiB",
           off_at->second, "same run with ZeRO-1 off", c);
      char line[256];
      std::snprintf(line, sizeof(line),
                    "%s np=%d: peak RSS per rank (largest rank) ZeRO-1 on %.1f MiB, off %.1f MiB,"
                    " ratio %.3f",
                    preset.c_str(), max_np, on->second, off_at->second, on->second / off_at->second);
      extra.push_back(line);
    }
  }
  PrintTable(out, o, rows, extra);
  return 0;
}

}  // namespace lcl::bench
