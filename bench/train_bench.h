// The training benchmark behind `lcl bench train`: a driver (a plain process, not under mpirun)
// that prepares synthetic data and models once, then for each preset and rank count launches
// `mpirun -np N lcl train` on a generated config and, in the same run, the same model, micro-batch,
// sequence shape, optimizer and threads trained by PyTorch with DistributedDataParallel over gloo
// (tests/bench/train_reference.py). It reports tokens/s against PyTorch's, the step-time breakdown,
// DP=2 weak-scaling efficiency, model FLOPs utilisation against the fp32 matmul peak of the same cores (measured
// in the same run), and the peak RSS per rank with ZeRO-1 on and off.
//
//   TrainBenchOptions o; o.presets = {"tiny"}; o.json = true;
//   RunTrainBench(o, std::cout);  // prints one JSON object per measurement
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace lcl::bench {

struct TrainBenchOptions {
  std::vector<std::string> presets = {"tiny", "small"};
  std::vector<int> ranks = {1, 2};  // world sizes (dp = world, tp = 1)
  int steps = 20;                   // measured steps per run
  int warmup = 3;                   // steps run first and left out of the means
  int micro_batch = 1;              // episodes per rank per step (global batch = micro_batch x ranks)
  int shot = 4;                     // example images per side of an episode (2 x shot + 1 images)
  int threads = 1;                  // intra-op threads per rank, on both sides
  // data.recipe of the lcl runs: lcl (the default episode layout) or official (the paper's conversation text);
  // max_length 12288 either way, so a 16-shot episode is never cut.
  std::string recipe = "lcl";
  // PyTorch references, each measured in the same run: ddp (eager DDP, gloo), compile (the same under
  // torch.compile, inductor's C++ backend on CPU) and ddp-tcmalloc (eager DDP with lcl's tcmalloc preloaded).
  std::vector<std::string> references = {"ddp"};
  // Extra `--set a.b=c` overrides for the lcl runs (e.g. parallel.wait=spin to measure the old waiting).
  std::vector<std::string> lcl_overrides;
  bool memory = true;            // also run ZeRO-1 off at the largest rank count (peak RSS)
  std::string work_dir;          // data, models, run dirs, logs; default /tmp/lcl_bench_train
  std::string mpirun;            // launcher command line; default $LCL_MPIRUN, else mpirun + test flags
  std::string python;            // an interpreter with torch; default $LCL_PYTHON, else the build's (.venv)
  std::string reference_script;  // train_reference.py; default from the source tree
  std::string lcl;               // the lcl binary; default this executable
  bool json = false;
};

// Runs every measurement and writes the report (JSON lines with `json`, else a table) to `out`.
// Throws lcl::ConfigError on bad options and lcl::Error when a child run fails (with its log's
// tail).
int RunTrainBench(const TrainBenchOptions& options, std::ostream& out);

}  // namespace lcl::bench
