// `lcl bench ckpt`: the checkpoint layer against raw sequential I/O of the same bytes, same disk, same run.
#include "bench/ckpt_bench.h"

#include <fcntl.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <sstream>
#include <thread>

#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/checkpointer.h"
#include "cluster/check.h"
#include "cluster/errors.h"
#include "cluster/mpi_comm.h"

namespace lcl::bench {
namespace {
namespace fs = std::filesystem;

double SlowestSeconds(MPI_Comm comm, double t0) {
  double mine = MPI_Wtime() - t0, slowest = 0;
  LCL_MPI_CHECK(MPI_Allreduce(&mine, &slowest, 1, MPI_DOUBLE, MPI_MAX, comm));
  return slowest;
}

// The physical reference: this rank writes the same number of bytes with plain write(2) calls and one fsync.
void RawWrite(const std::string& path, const torch::Tensor& data) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw CheckpointError("bench ckpt: cannot create " + path);
  const char* p = static_cast<const char*>(data.data_ptr());
  size_t left = data.numel() * data.element_size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, std::min<size_t>(left, size_t{1} << 30));
    if (n <= 0) {
      ::close(fd);
      throw CheckpointError("bench ckpt: write failed on " + path + " (disk full?)");
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  ::fsync(fd);
  ::close(fd);
}

void RawRead(const std::string& path, torch::Tensor& into) {
  int fd = ::open(path.c_str(), O_RDONLY);
  char* p = static_cast<char*>(into.data_ptr());
  size_t left = into.numel() * into.element_size();
  while (left > 0) {
    ssize_t n = ::read(fd, p, std::min<size_t>(left, size_t{1} << 30));
    if (n <= 0) break;
    p += n;
    left -= static_cast<size_t>(n);
  }
  ::close(fd);
}

// posix_fadvise(DONTNEED) every page of a file (its data is on disk: written and fsynced), so the next read
// comes from the disk, as after a restart; also keeps the run's many gigabytes from crowding the page cache.
void DropCache(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

void DropCacheOfDir(const std::string& dir) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.is_regular_file(ec)) DropCache(e.path().string());
  }
}

// The stand-in forward and backward: fixed work (256x256 matrix products, 2 * 256^3 FLOPs each) on this thread,
// competing with the writer thread for the cores as a training step does. Returns the wall time in ms.
constexpr double kMmFlops = 2.0 * 256 * 256 * 256;
double Compute(int64_t products) {
  const torch::Tensor a = torch::rand({256, 256}), b = torch::rand({256, 256});
  torch::Tensor c = torch::empty({256, 256});
  const double t0 = MPI_Wtime();
  for (int64_t i = 0; i < products; ++i) torch::mm_out(c, a, b);
  return (MPI_Wtime() - t0) * 1e3;
}

void Emit(std::ostream& out, bool json, const std::string& name, double value, const std::string& unit,
          double reference, const std::string& ref_name, const std::string& config) {
  const double ratio = reference > 0 ? value / reference : 0;
  if (json) {
    out << "{\"name\":\"" << name << "\",\"value\":" << value << ",\"unit\":\"" << unit
        << "\",\"reference\":" << reference << ",\"reference_name\":\"" << ref_name << "\",\"ratio\":" << ratio
        << ",\"config\":" << config << "}\n";
  } else {
    char line[256];
    std::snprintf(line, sizeof(line), "%-28s %10.3f %-5s  %-26s %10.3f  ratio %.3f\n", name.c_str(), value,
                  unit.c_str(), ref_name.c_str(), reference, ratio);
    out << line;
  }
}

}  // namespace

void RunCkptBench(const CkptBenchOptions& o, MPI_Comm comm, std::ostream& out) {
  int rank = 0, world = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &world);
  if (o.dir.empty()) throw ConfigError("bench ckpt: --dir is required (the disk to measure)");
  if (o.repeats < 1) throw ConfigError("bench ckpt: --repeats must be at least 1");
  for (double ms : o.step_ms) {
    if (!(ms > 0)) throw ConfigError("bench ckpt: --step-ms values must be positive milliseconds");
  }
  if (o.threads < 0) {
    throw ConfigError("bench ckpt: --threads must be >= 0 (0: the cores split over this node's ranks)");
  }
  if (o.step_tokens < 0) throw ConfigError("bench ckpt: --step-tokens must be >= 0 (0: no modelled step)");
  // The cores split over this node's ranks, as `lcl train` splits them: more threads than cores would make the
  // stand-in step's BLAS threads and the writer thread preempt each other, which no training run does.
  const int local = cluster::MpiComm::SplitShared(comm, rank).size();
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  torch::set_num_threads(o.threads > 0 ? o.threads : std::max(1, cores / local));
  const int64_t per_rank = o.total_bytes / world / 4;  // float32 elements
  if (per_rank < 4) throw ConfigError("bench ckpt: --bytes is too small for " + std::to_string(world) + " ranks");
  // Four tensors per rank, as a model's parameters and two Adam moments would give.
  std::vector<torch::Tensor> parts;
  for (int i = 0; i < 4; ++i) parts.push_back(torch::rand({per_rank / 4}) + rank);
  const double rank_bytes = 4.0 * (per_rank / 4) * 4;
  const double gb = rank_bytes * world / 1e9;
  const std::string run = o.dir + "/lcl-bench-ckpt";
  if (rank == 0) fs::remove_all(run);
  fs::create_directories(run);
  LCL_MPI_CHECK(MPI_Barrier(comm));

  // The stand-in steps: fixed lengths at the rate measured now (no save in flight; the best of 3, so the
  // lengths are what an undisturbed step takes), then the modelled step.
  double products_per_ms = 0;
  for (int i = 0; i < 3; ++i) products_per_ms = std::max(products_per_ms, 64 / Compute(64));
  struct StandIn {
    std::string name;  // metric suffix
    int64_t products = 0;
    double quiet_ms = 0;  // its length with no save in flight
    double stall_s = 1e30, cost_ms = 1e30;
  };
  std::vector<StandIn> steps;
  for (double ms : o.step_ms) {
    char name[32];
    std::snprintf(name, sizeof(name), "_%.0fms", ms);
    steps.push_back({name, std::max<int64_t>(1, static_cast<int64_t>(ms * products_per_ms)), ms});
  }
  const double model_params = rank_bytes / 16;
  if (o.step_tokens > 0) {
    const int64_t products = std::max<int64_t>(1, static_cast<int64_t>(6 * model_params * o.step_tokens / kMmFlops));
    steps.push_back({"", products, products / products_per_ms});
  }

  auto state = [&] {
    checkpoint::CheckpointState s;
    for (int i = 0; i < 4; ++i) {
      s.shards.push_back({"t" + std::to_string(i), parts[i], {per_rank / 4 * world}, {rank * (per_rank / 4)}});
    }
    return s;
  };
  auto raw_path = [&](int i) { return run + "/raw-r" + std::to_string(rank) + "-" + std::to_string(i); };
  double save_s = 1e30, raw_write_s = 1e30, raw_read_s = 1e30, raw_read_disk_s = 1e30;
  double load_s = 1e30, load_disk_s = 1e30, resume_s = 1e30, stall_copy_s = 1e30;
  // Separate run directories, so each checkpointer's retention keeps its own newest step.
  checkpoint::CheckpointOptions copt;
  copt.run_dir = run + "/sync";
  copt.keep_last = 1;
  copt.async = false;
  checkpoint::Checkpointer sync(comm, copt);
  copt.run_dir = run + "/async";
  copt.async = true;
  checkpoint::Checkpointer async_copy(comm, copt);  // copies the state inside Save()
  copt.run_dir = run + "/deferred";
  copt.defer_snapshot = true;
  checkpoint::Checkpointer async_deferred(comm, copt);  // copies what is unwritten at ReleaseState()
  // Destination buffers allocated once, as a model's parameters are when a run resumes.
  std::vector<torch::Tensor> loaded, expected;
  for (int i = 0; i < 4; ++i) loaded.push_back(torch::zeros({per_rank / 4}));
  for (int i = 0; i < 4; ++i) expected.push_back(torch::zeros({per_rank / 4}));
  torch::Tensor buf = torch::zeros({per_rank / 4});
  auto slowest = [&](double mine) {
    double max = 0;
    LCL_MPI_CHECK(MPI_Allreduce(&mine, &max, 1, MPI_DOUBLE, MPI_MAX, comm));
    return max;
  };
  auto stall_of = [&](const checkpoint::SaveResult& r) {
    if (!r.committed) throw CheckpointError("bench ckpt: async save failed: " + r.reason);
    return slowest(r.stall_ms / 1e3);
  };
  auto check_saved = [&](const std::string& dir, const std::vector<torch::Tensor>& want, const char* what) {
    checkpoint::CheckpointReader reader(dir);
    for (int i = 0; i < 4; ++i) {
      reader.ReadInto("t" + std::to_string(i), {rank * (per_rank / 4)}, loaded[i]);
      if (!loaded[i].equal(want[i])) {
        throw CheckpointError(std::string("bench ckpt: the ") + what + " holds other bytes than the state it saved");
      }
    }
    DropCacheOfDir(dir);
  };
  int64_t step = 0;
  for (int rep = 0; rep < o.repeats; ++rep) {
    double t0 = MPI_Wtime();
    sync.Save(++step, state());
    save_s = std::min(save_s, SlowestSeconds(comm, t0));
    if (!sync.last().committed) throw CheckpointError("bench ckpt: save failed: " + sync.last().reason);
    const std::string step_dir = run + "/sync/checkpoints/" + checkpoint::Checkpointer::StepDirName(step);

    t0 = MPI_Wtime();
    for (int i = 0; i < 4; ++i) RawWrite(raw_path(i), parts[i]);
    raw_write_s = std::min(raw_write_s, SlowestSeconds(comm, t0));

    // Loads (ReadInto the destination tensors) against raw reads, alternating which comes first: from the page
    // cache (both files read once before), then from the disk (both files' pages dropped before each).
    auto read_raw = [&](bool disk) {
      if (disk) {
        for (int i = 0; i < 4; ++i) DropCache(raw_path(i));
      }
      LCL_MPI_CHECK(MPI_Barrier(comm));
      const double t = MPI_Wtime();
      for (int i = 0; i < 4; ++i) RawRead(raw_path(i), buf);
      double& best = disk ? raw_read_disk_s : raw_read_s;
      best = std::min(best, SlowestSeconds(comm, t));
    };
    auto load = [&](bool disk) {
      checkpoint::CheckpointReader reader(step_dir);
      if (disk) DropCacheOfDir(step_dir);
      LCL_MPI_CHECK(MPI_Barrier(comm));
      const double t = MPI_Wtime();
      for (int i = 0; i < 4; ++i) reader.ReadInto("t" + std::to_string(i), {rank * (per_rank / 4)}, loaded[i]);
      double& best = disk ? load_disk_s : load_s;
      best = std::min(best, SlowestSeconds(comm, t));
      for (int i = 0; i < 4; ++i) {
        if (!loaded[i].equal(parts[i])) throw CheckpointError("bench ckpt: loaded data differs from what was saved");
      }
    };
    for (bool disk : {false, true}) {
      if (!disk) {  // warm both
        for (int i = 0; i < 4; ++i) RawRead(raw_path(i), buf);
        checkpoint::CheckpointReader reader(step_dir);
        for (int i = 0; i < 4; ++i) reader.ReadInto("t" + std::to_string(i), {rank * (per_rank / 4)}, loaded[i]);
      }
      if (rep % 2 == 1) read_raw(disk);
      load(disk);
      if (rep % 2 == 0) read_raw(disk);
    }
    {  // What a resume does: this rank's share of the size + checksum verification, then the read (page cache).
      checkpoint::CheckpointReader reader(step_dir);
      t0 = MPI_Wtime();
      std::vector<std::string> bad = reader.VerifyFiles(rank, world);
      for (int i = 0; i < 4; ++i) reader.ReadInto("t" + std::to_string(i), {rank * (per_rank / 4)}, loaded[i]);
      resume_s = std::min(resume_s, SlowestSeconds(comm, t0));
      if (!bad.empty()) throw CheckpointError("bench ckpt: verification failed: " + bad[0]);
    }
    DropCacheOfDir(step_dir);
    for (int i = 0; i < 4; ++i) DropCache(raw_path(i));

    // The state copied inside Save(): the caller may modify it as soon as Save() returns.
    async_copy.Save(++step, state());
    stall_copy_s = std::min(stall_copy_s, stall_of(async_copy.Wait()));
    DropCacheOfDir(run + "/async/checkpoints/" + checkpoint::Checkpointer::StepDirName(step));

    // The deferred snapshot, driven as the trainer drives it: save, forward + backward, fence, optimizer step.
    for (StandIn& s : steps) {
      for (int i = 0; i < 4; ++i) expected[i].copy_(parts[i]);
      LCL_MPI_CHECK(MPI_Barrier(comm));
      async_deferred.Save(++step, state());
      const double took_ms = Compute(s.products);
      async_deferred.ReleaseState();
      for (torch::Tensor& p : parts) p.add_(1.0f);  // the optimizer step modifies every saved byte
      s.stall_s = std::min(s.stall_s, stall_of(async_deferred.Wait()));
      s.cost_ms = std::min(s.cost_ms, std::max(0.0, slowest(took_ms - s.quiet_ms)));  // noise can make it < 0
      // After timing: the checkpoint holds the state at the save's step, not the modified one.
      check_saved(run + "/deferred/checkpoints/" + checkpoint::Checkpointer::StepDirName(step), expected,
                  "deferred async save");
    }
  }
  if (rank == 0) {
    std::ostringstream cfg;
    cfg << "{\"bytes\":" << static_cast<int64_t>(gb * 1e9) << ",\"ranks\":" << world << ",\"dir\":\"" << o.dir
        << "\",\"step_tokens\":" << o.step_tokens << ",\"stand_in_gflops\":" << products_per_ms * kMmFlops / 1e6 << "}";
    if (!o.json) {
      out << "# lcl bench ckpt: " << gb << " GB over " << world << " ranks in " << o.dir << "; best of " << o.repeats
          << "; reference measured in the same run\n"
          << "# load = from the page cache; load_disk = pages dropped first (both sides); resume = verify checksums"
          << " + read\n"
          << "# async_stall_copy = state copied inside Save(); async_stall[_N ms] = Save() + ReleaseState() after a"
          << " stand-in forward+backward of fixed work (" << products_per_ms * kMmFlops / 1e6
          << " GFLOP/s measured); async_step_cost = how much longer that stand-in took while the writer ran\n";
      if (o.step_tokens > 0) {
        out << "# async_stall (no suffix): the modelled step of a " << model_params / 1e6
            << "M-parameter AdamW state per rank on " << o.step_tokens << " tokens per rank: " << steps.back().quiet_ms
            << " ms\n";
      }
    }
    Emit(out, o.json, "ckpt.save_throughput", gb / save_s, "GB/s", gb / raw_write_s, "raw write+fsync", cfg.str());
    Emit(out, o.json, "ckpt.load_throughput", gb / load_s, "GB/s", gb / raw_read_s, "raw read", cfg.str());
    Emit(out, o.json, "ckpt.load_disk_throughput", gb / load_disk_s, "GB/s", gb / raw_read_disk_s, "raw read (disk)",
         cfg.str());
    Emit(out, o.json, "ckpt.resume_throughput", gb / resume_s, "GB/s", gb / raw_read_s, "raw read", cfg.str());
    Emit(out, o.json, "ckpt.async_stall_copy", stall_copy_s * 1e3, "ms", save_s * 1e3, "synchronous save (ms)",
         cfg.str());
    for (const StandIn& s : steps) {
      std::ostringstream step_cfg;
      step_cfg << cfg.str().substr(0, cfg.str().size() - 1) << ",\"step_ms\":" << s.quiet_ms << "}";
      Emit(out, o.json, "ckpt.async_stall" + s.name, s.stall_s * 1e3, "ms", save_s * 1e3, "synchronous save (ms)",
           step_cfg.str());
      Emit(out, o.json, "ckpt.async_step_cost" + s.name, s.cost_ms, "ms", s.quiet_ms, "stand-in step alone (ms)",
           step_cfg.str());
    }
  }
  LCL_MPI_CHECK(MPI_Barrier(comm));
  if (rank == 0) fs::remove_all(run);
}

}  // namespace lcl::bench
