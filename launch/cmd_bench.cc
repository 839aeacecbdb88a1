// `lcl bench ...`: every benchmark measures its reference in the same run and prints the ratio.
#include <iostream>
#include <sstream>

#include "cluster/logging.h"
#include "launch/cli.h"
#include "sampler/data_bench.h"
#include "tests/bench/ckpt_bench.h"
#include "tests/bench/comm_bench.h"

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
  auto* cmd = bench.add_subcommand("data", "episode pipeline (decode, pad, resize, normalise, tokenize) vs a bare "
                                           "OpenCV decode+resize loop over the same JPEGs");
  auto opt = std::make_shared<sampler::DataBenchOptions>();
  cmd->add_flag("--json", opt->json, "one JSON object per measurement");
  cmd->add_option("--dir", opt->dir, "where to synthesise the JPEGs (default: a temporary directory)");
  cmd->add_option("--episodes", opt->episodes, "episodes per measurement")->capture_default_str();
  cmd->add_option("--shot", opt->shot, "images per side of an episode")->capture_default_str();
  cmd->add_option("--workers", opt->workers, "worker counts to measure")->capture_default_str();
  cmd->add_option("--rounds", opt->rounds, "alternating rounds; the best of each counts")->capture_default_str();
  cmd->callback([&launch, opt] {
    launch.action = [&launch, opt]() -> int {
      cluster::InitLogging((*launch.argv)[0], 0, 1, "");
      return sampler::RunDataBench(*opt, std::cout);
    };
  });
}

}  // namespace

void RegisterBenchCommands(CLI::App& bench, Launch& launch) {
  RegisterBenchComm(bench, launch);
  RegisterBenchCkpt(bench, launch);
  RegisterBenchData(bench, launch);
  const std::pair<const char*, const char*> later[] = {
      {"model", "#3"}, {"train", "#5"}};
  for (const auto& [name, issue] : later) {
    auto* sub = bench.add_subcommand(name, std::string("bench ") + name);
    sub->allow_extras();
    std::string n = name, i = issue;
    sub->callback([&launch, n, i] { launch.action = NotYetBuilt("bench " + n, i); });
  }
}

}  // namespace lcl::launch
