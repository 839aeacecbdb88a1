// ckpt_probe: a deterministic stand-in for a training run, used by the kill -9 fault test to exercise the
// checkpoint layer end to end under mpirun. State: W and M [64, 32] float32, row-sharded over ranks, updated
// each step with a per-rank random draw (so an exact resume needs the RNG states too); the "loss" is the global
// sum of W*M. Rank 0 appends "step S loss L" (L as a hex float, bitwise) to <run>/losses.txt.
//   ckpt_probe <run_dir> <steps> <save_every> <resume: auto|none> <phase_delay_ms> <step_sleep_ms>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/checkpointer.h"
#include "checkpoint/checksum.h"
#include "cluster/logging.h"
#include "cluster/mpi_communicator.h"
#include "cluster/mpi_session.h"

namespace {

using namespace lcl;  // a test program, not a header

std::string RngBytes() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  torch::Tensor s = gen.get_state();
  return std::string(static_cast<const char*>(s.data_ptr()), s.numel());
}

void SetRng(const std::string& bytes) {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  torch::Tensor s = torch::empty({static_cast<int64_t>(bytes.size())}, torch::kByte);
  std::memcpy(s.data_ptr(), bytes.data(), bytes.size());
  gen.set_state(s);
}

}  // namespace

int main(int argc, char** argv) {
  cluster::MpiSession mpi(&argc, &argv);
  cluster::InitLogging(argv[0], mpi.rank(), mpi.size(), "");
  if (argc != 7) {
    std::fprintf(stderr, "usage: ckpt_probe run_dir steps save_every auto|none phase_delay_ms step_sleep_ms\n");
    return 2;
  }
  const std::string run = argv[1];
  const int steps = std::atoi(argv[2]), save_every = std::atoi(argv[3]);
  const bool resume = std::string(argv[4]) == "auto";
  const int rank = mpi.rank(), world = mpi.size();
  const int64_t rows = 64 / world;
  std::filesystem::create_directories(run + "/pids");
  std::ofstream(run + "/pids/rank" + std::to_string(rank) + ".pid") << getpid() << "\n";

  cluster::MpiCommunicator comm(MPI_COMM_WORLD, "world");
  checkpoint::CheckpointOptions opt;
  opt.run_dir = run;
  opt.async = true;
  opt.keep_last = 2;
  opt.phase_delay = std::chrono::milliseconds(std::atoi(argv[5]));
  opt.grid.set_world(world);
  opt.grid.set_dp(world);
  opt.grid.set_tp(1);
  if (rank == 0) checkpoint::Checkpointer::CleanStaleTmp(run);
  MPI_Barrier(MPI_COMM_WORLD);
  checkpoint::Checkpointer ckpt(MPI_COMM_WORLD, opt);

  torch::manual_seed(1000 + rank);
  torch::Tensor w = torch::zeros({rows, 32}), m = torch::zeros({rows, 32});
  int64_t start = 0;
  const std::string from = resume ? checkpoint::ResolveResume(run, "auto") : "";
  if (!from.empty()) {
    checkpoint::CheckpointReader reader(from);
    w = reader.Read("w", {rank * rows, 0}, {rows, 32});
    m = reader.Read("m", {rank * rows, 0}, {rows, 32});
    start = reader.manifest().step();
    SetRng(reader.manifest().rng(rank).cpu());
    if (rank == 0) std::printf("resumed from %s at step %lld\n", from.c_str(), static_cast<long long>(start));
  }
  for (int64_t step = start + 1; step <= steps; ++step) {
    torch::Tensor idx = torch::arange(rank * rows * 32, (rank + 1) * rows * 32, torch::kFloat).reshape({rows, 32});
    w = w * 0.999f + torch::sin(idx * 0.01f + step * 0.1f) * 0.01f + torch::randn({rows, 32}) * 1e-3f;
    m = m * 0.9f + w * w * 0.1f;
    torch::Tensor loss = (w.to(torch::kDouble) * m.to(torch::kDouble)).sum().reshape({1});
    comm.AllReduce(loss, cluster::ReduceOp::kSum);
    if (rank == 0) {
      std::FILE* f = std::fopen((run + "/losses.txt").c_str(), "a");
      std::fprintf(f, "step %lld loss %a\n", static_cast<long long>(step), loss.item<double>());
      std::fclose(f);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(std::atoi(argv[6])));
    if (step % save_every == 0 || step == steps) {
      checkpoint::CheckpointState st;
      st.shards.push_back({"w", w, {64, 32}, {rank * rows, 0}});
      st.shards.push_back({"m", m, {64, 32}, {rank * rows, 0}});
      st.optimizer_step = step;
      st.rng_cpu = RngBytes();
      ckpt.Save(step, std::move(st));
    }
  }
  ckpt.Wait();
  torch::Tensor full = torch::empty({64, 32});
  comm.AllGather(w.contiguous(), full);
  if (rank == 0) {
    checkpoint::Xxh3 h;
    h.Update(full.data_ptr(), full.numel() * 4);
    std::ofstream(run + "/final.txt") << checkpoint::HexDigest(h.Digest()) << "\n";
  }
  return 0;
}
