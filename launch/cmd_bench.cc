// `lcl bench ...`: every benchmark measures its reference in the same run and prints the ratio.
#include <iostream>
#include <sstream>

#include "cluster/errors.h"
#include "cluster/logging.h"
#include "launch/cli.h"
#include "bench/data_bench.h"
#include "bench/ckpt_bench.h"
#include "bench/comm_bench.h"
#include "bench/model_bench.h"
#include "bench/train_bench.h"
#include "lcl/build_info.h"

namespace lcl::launch {

namespace {

void RegisterBenchComm(CLI::App& bench, Launch& launch) {
  auto* cmd = bench.add_subcommand("comm", "all-reduce / reduce-scatter / all-gather: lcl vs raw MPI");
  struct Args {
    std::string min_bytes = "1K", max_bytes = "256M", ops = "allreduce,reducescatter,allgather";
    bench::CommBenchOptions opt;
  };
  auto args = std::make_shared<Args>();
  cmd->add_option("--min-bytes", args->min_bytes, "smallest message (e.g. 1K)")->capture_default_str();
  cmd->add_option("--max-bytes", args->max_bytes, "largest message (e.g. 256M)")->capture_default_str();
  cmd->add_option("--ops", args->ops, "comma-separated: allreduce,reducescatter,allgather")->capture_default_str();
  cmd->add_option("--warmup", args->opt.warmup, "warm-up iterations per size")->capture_default_str();
  cmd->add_option("--rounds", args->opt.rounds, "alternating lcl/MPI rounds; the best of each counts")
      ->capture_default_str();
  cmd->add_flag("--async", args->opt.async, "time the async form (issue + Wait)");
  cmd->add_flag("--json", args->opt.json, "one JSON object per measurement");
  cmd->callback([&launch, args] {
    launch.action = [&launch, args]() -> int {
      auto& mpi = launch.Mpi();
      cluster::InitLogging((*launch.argv)[0], mpi.rank(), mpi.size(), "");
      args->opt.min_bytes = bench::ParseBytes(args->min_bytes, "--min-bytes");
      args->opt.max_bytes = bench::ParseBytes(args->max_bytes, "--max-bytes");
      args->opt.ops.clear();
      std::stringstream ss(args->ops);
      for (std::string op; std::getline(ss, op, ',');) args->opt.ops.push_back(op);
      args->opt.single_copy = mpi.single_copy();
      bench::RunCommBench(args->opt, MPI_COMM_WORLD, std::cout);
      return 0;
    };
  });
}

void RegisterBenchCkpt(CLI::App& bench, Launch& launch) {
  auto* cmd = bench.add_subcommand("ckpt", "checkpoint save/load throughput vs raw write+fsync, async stall");
  struct Args {
    std::string bytes = "2G";
    bench::CkptBenchOptions opt;
  };
  auto args = std::make_shared<Args>();
  cmd->add_option("--bytes", args->bytes, "total state size over all ranks (e.g. 2G)")->capture_default_str();
  cmd->add_option("--dir", args->opt.dir, "directory on the disk to measure")->required();
  cmd->add_option("--repeats", args->opt.repeats, "repetitions; the best of each counts")->capture_default_str();
  cmd->add_option("--step-ms", args->opt.step_ms,
                  "stand-in forward+backward lengths (ms, comma-separated) between an async save and its fence")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--threads", args->opt.threads,
                  "torch threads per rank for the stand-in step (0: the cores split over this node's ranks)")
      ->capture_default_str();
  cmd->add_option("--step-tokens", args->opt.step_tokens,
                  "tokens per rank of the modelled step (a model whose AdamW state is this rank's share); 0: none")
      ->capture_default_str();
  cmd->add_flag("--json", args->opt.json, "one JSON object per measurement");
  cmd->callback([&launch, args] {
    launch.action = [&launch, args]() -> int {
      auto& mpi = launch.Mpi();
      cluster::InitLogging((*launch.argv)[0], mpi.rank(), mpi.size(), "");
      args->opt.total_bytes = bench::ParseBytes(args->bytes, "--bytes");
      bench::RunCkptBench(args->opt, MPI_COMM_WORLD, std::cout);
      return 0;
    };
  });
}

void RegisterBenchData(CLI::App& bench, Launch& launch) {
  auto* cmd = bench.add_subcommand("data",
                                   "episode pipeline (decode, pad, resize, normalise, tokenize) vs a bare "
                                   "OpenCV decode+resize loop over the same JPEGs");
  auto opt = std::make_shared<bench::DataBenchOptions>();
  cmd->add_flag("--json", opt->json, "one JSON object per measurement");
  cmd->add_option("--dir", opt->dir, "where to synthesise the JPEGs (default: a temporary directory)");
  cmd->add_option("--episodes", opt->episodes, "episodes per measurement")->capture_default_str();
  cmd->add_option("--shot", opt->shot, "images per side of an episode")->capture_default_str();
  cmd->add_option("--workers", opt->workers, "worker counts to measure")->capture_default_str();
  cmd->add_option("--rounds", opt->rounds, "alternating rounds; the best of each counts")->capture_default_str();
  cmd->callback([&launch, opt] {
    launch.action = [&launch, opt]() -> int {
      cluster::InitLogging((*launch.argv)[0], 0, 1, "");
      return bench::RunDataBench(*opt, std::cout);
    };
  });
}

void RegisterBenchModel(CLI::App& bench, Launch& launch) {
  auto* cmd = bench.add_subcommand("model",
                                   "forward+backward time per token and peak memory (with and without "
                                   "activation checkpointing) vs the same model in plain LibTorch ops");
  struct Args {
    std::string presets = "tiny,small";
    std::string attention_seq = "2048,8192";
    bench::ModelBenchOptions opt;
  };
  auto args = std::make_shared<Args>();
  cmd->add_option("--presets", args->presets, "comma-separated model presets (empty: none)")->capture_default_str();
  cmd->add_option("--attention-seq", args->attention_seq,
                  "sequence lengths for SDPA vs explicit attention, comma-separated (empty: none)")
      ->capture_default_str();
  cmd->add_option("--attention-heads", args->opt.attention_heads, "heads of the attention benchmark")
      ->capture_default_str();
  cmd->add_option("--attention-head-dim", args->opt.attention_head_dim, "head dim of the attention benchmark")
      ->capture_default_str();
  cmd->add_option("--batch", args->opt.batch, "sequences per micro-batch")->capture_default_str();
  cmd->add_option("--seq-len", args->opt.seq_len, "tokens per sequence")->capture_default_str();
  cmd->add_option("--images", args->opt.images, "images per sequence")->capture_default_str();
  cmd->add_option("--warmup", args->opt.warmup, "untimed steps per variant")->capture_default_str();
  cmd->add_option("--iters", args->opt.iters, "timed steps per round")->capture_default_str();
  cmd->add_option("--rounds", args->opt.rounds, "alternating rounds; the best of each counts")->capture_default_str();
  cmd->add_option("--threads", args->opt.threads, "intra-op threads per rank (0: cores / ranks on the node)")
      ->capture_default_str();
  cmd->add_flag("--json", args->opt.json, "one JSON object per measurement");
  cmd->callback([&launch, args] {
    launch.action = [&launch, args]() -> int {
      auto& mpi = launch.Mpi();
      cluster::InitLogging((*launch.argv)[0], mpi.rank(), mpi.size(), "");
      args->opt.presets.clear();
      std::stringstream ss(args->presets);
      for (std::string p; std::getline(ss, p, ',');) {
        if (!p.empty()) args->opt.presets.push_back(p);
      }
      args->opt.attention_seq_lens.clear();
      std::stringstream seqs(args->attention_seq);
      for (std::string t; std::getline(seqs, t, ',');) {
        if (t.empty()) continue;
        try {
          args->opt.attention_seq_lens.push_back(std::stoll(t));
        } catch (const std::exception&) {
          throw ConfigError("--attention-seq: '" + t + "' is not a number (give lengths like 2048,8192)");
        }
      }
      bench::RunModelBench(args->opt, MPI_COMM_WORLD, std::cout);
      return 0;
    };
  });
}

void RegisterBenchTrain(CLI::App& bench, Launch& launch) {
  auto* cmd =
      bench.add_subcommand("train",
                           "tokens/s, step-time breakdown and peak RSS of `lcl train` at 1 and 2 ranks vs PyTorch DDP "
                           "(gloo) on the "
                           "same model and shapes; run it as a plain process: it launches mpirun itself");
  struct Args {
    std::string presets = "tiny,small", ranks = "1,2", references = "ddp";
    bool no_memory = false;
    bench::TrainBenchOptions opt;
  };
  auto args = std::make_shared<Args>();
  auto& o = args->opt;
  cmd->add_option("--presets", args->presets, "comma-separated model presets")->capture_default_str();
  cmd->add_option("--ranks", args->ranks, "comma-separated rank counts (dp; tp = 1)")->capture_default_str();
  cmd->add_option("--steps", o.steps, "measured steps per run")->capture_default_str();
  cmd->add_option("--warmup", o.warmup, "steps before the measured ones")->capture_default_str();
  cmd->add_option("--micro-batch", o.micro_batch, "episodes per rank per step")->capture_default_str();
  cmd->add_option("--shot", o.shot, "example images per side of an episode")->capture_default_str();
  cmd->add_option("--threads", o.threads, "intra-op threads per rank (both sides)")->capture_default_str();
  cmd->add_option("--recipe", o.recipe, "data.recipe of the lcl runs: lcl | official")->capture_default_str();
  cmd->add_option("--reference", args->references,
                  "comma-separated PyTorch references: ddp (eager DDP), compile (DDP under torch.compile), "
                  "ddp-tcmalloc (eager DDP on lcl's tcmalloc)")
      ->capture_default_str();
  cmd->add_option("--set", o.lcl_overrides, "override a field of the lcl runs' config, a.b=c (repeatable)");
  cmd->add_flag("--no-memory", args->no_memory, "skip the ZeRO-1 off run (peak RSS on vs off)");
  cmd->add_option("--work-dir", o.work_dir, "data, models, run dirs and logs (default /tmp/lcl_bench_train)");
  cmd->add_option("--mpirun", o.mpirun,
                  "launcher command line (default $LCL_MPIRUN, else mpirun --oversubscribe "
                  "--allow-run-as-root --bind-to none; the ranks choose the shared-memory single copy)");
  cmd->add_option("--python", o.python,
                  "Python with torch for the reference (default $LCL_PYTHON, else the "
                  "build's .venv: " LCL_BUILD_PYTHON ")");
  cmd->add_option("--reference-script", o.reference_script,
                  "train_reference.py (default: bench/ in the source tree, or $LCL_SOURCE_DIR)");
  cmd->add_option("--lcl", o.lcl, "lcl binary to train with (default: this one)");
  cmd->add_flag("--json", o.json, "one JSON object per measurement");
  cmd->callback([&launch, args] {
    launch.action = [&launch, args]() -> int {
      cluster::InitLogging((*launch.argv)[0], 0, 1, "");
      auto split = [](const std::string& s) {
        std::vector<std::string> out;
        std::stringstream ss(s);
        for (std::string w; std::getline(ss, w, ',');) {
          if (!w.empty()) out.push_back(w);
        }
        return out;
      };
      args->opt.presets = split(args->presets);
      args->opt.references = split(args->references);
      args->opt.ranks.clear();
      for (const std::string& r : split(args->ranks)) {
        try {
          args->opt.ranks.push_back(std::stoi(r));
        } catch (const std::exception&) {
          throw ConfigError("bench train: --ranks: '" + r + "' is not a number");
        }
      }
      args->opt.memory = !args->no_memory;
      return bench::RunTrainBench(args->opt, std::cout);
    };
  });
}

}  // namespace

void RegisterBenchCommands(CLI::App& bench, Launch& launch) {
  RegisterBenchComm(bench, launch);
  RegisterBenchCkpt(bench, launch);
  RegisterBenchData(bench, launch);
  RegisterBenchModel(bench, launch);
  RegisterBenchTrain(bench, launch);
}

}  // namespace lcl::launch
