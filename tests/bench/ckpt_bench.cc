// `lcl bench ckpt`: the checkpoint layer against raw sequential I/O of the same bytes, same disk, same run.
#include "tests/bench/ckpt_bench.h"

#include <fcntl.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <sstream>

#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/checkpointer.h"
#include "cluster/check.h"
#include "cluster/errors.h"

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

// Stand-in for a forward and backward: `ms` of matrix products on this thread (real CPU work, competing with
// the writer thread as a training step does).
void BusyCompute(double ms) {
  const torch::Tensor a = torch::rand({256, 256}), b = torch::rand({256, 256});
  const double t0 = MPI_Wtime();
  while ((MPI_Wtime() - t0) * 1e3 < ms) torch::mm(a, b);
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
    std::snprintf(line, sizeof(line), "%-22s %10.3f %-5s  %-28s %10.3f  ratio %.3f\n", name.c_str(), value,
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
  const int64_t per_rank = o.total_bytes / world / 4;  // float32 elements
  // Four tensors per rank, as a model's parameters and two Adam moments would give.
  std::vector<torch::Tensor> parts;
  for (int i = 0; i < 4; ++i) parts.push_back(torch::rand({per_rank / 4}) + rank);
  const double gb = 4.0 * (per_rank / 4) * 4 * world / 1e9;
  const std::string run = o.dir + "/lcl-bench-ckpt";
  if (rank == 0) fs::remove_all(run);
  fs::create_directories(run);
  LCL_MPI_CHECK(MPI_Barrier(comm));

  auto state = [&] {
    checkpoint::CheckpointState s;
    for (int i = 0; i < 4; ++i) {
      s.shards.push_back({"t" + std::to_string(i), parts[i], {per_rank / 4 * world}, {rank * (per_rank / 4)}});
    }
    return s;
  };
  double save_s = 1e30, raw_write_s = 1e30, load_s = 1e30, resume_s = 1e30, raw_read_s = 1e30;
  double stall_copy_s = 1e30, stall_deferred_s = 1e30;
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
  auto slowest_stall = [&](const checkpoint::SaveResult& r) {
    if (!r.committed) throw CheckpointError("bench ckpt: async save failed: " + r.reason);
    const double mine = r.stall_ms / 1e3;
    double slowest = 0;
    LCL_MPI_CHECK(MPI_Allreduce(&mine, &slowest, 1, MPI_DOUBLE, MPI_MAX, comm));
    return slowest;
  };
  for (int rep = 0; rep < o.repeats; ++rep) {
    double t0 = MPI_Wtime();
    sync.Save(rep + 1, state());
    save_s = std::min(save_s, SlowestSeconds(comm, t0));
    if (!sync.last().committed) throw CheckpointError("bench ckpt: save failed: " + sync.last().reason);

    t0 = MPI_Wtime();
    for (int i = 0; i < 4; ++i) RawWrite(run + "/raw-r" + std::to_string(rank) + "-" + std::to_string(i), parts[i]);
    raw_write_s = std::min(raw_write_s, SlowestSeconds(comm, t0));

    // Load as the bench always did (ReadInto the destination tensors), then a resume's full path (this rank's
    // share of the size + checksum verification, then the read), alternating which comes first.
    const std::string step_dir = run + "/sync/checkpoints/" + checkpoint::Checkpointer::StepDirName(rep + 1);
    auto read_raw = [&] {
      const double t = MPI_Wtime();
      for (int i = 0; i < 4; ++i) RawRead(run + "/raw-r" + std::to_string(rank) + "-" + std::to_string(i), buf);
      raw_read_s = std::min(raw_read_s, SlowestSeconds(comm, t));
    };
    if (rep % 2 == 1) read_raw();
    {
      checkpoint::CheckpointReader reader(step_dir);
      t0 = MPI_Wtime();
      for (int i = 0; i < 4; ++i) reader.ReadInto("t" + std::to_string(i), {rank * (per_rank / 4)}, loaded[i]);
      load_s = std::min(load_s, SlowestSeconds(comm, t0));
    }
    for (int i = 0; i < 4; ++i) {
      if (!loaded[i].equal(parts[i])) throw CheckpointError("bench ckpt: loaded data differs from what was saved");
    }
    {
      checkpoint::CheckpointReader reader(step_dir);
      t0 = MPI_Wtime();
      std::vector<std::string> bad = reader.VerifyFiles(rank, world);
      for (int i = 0; i < 4; ++i) reader.ReadInto("t" + std::to_string(i), {rank * (per_rank / 4)}, loaded[i]);
      resume_s = std::min(resume_s, SlowestSeconds(comm, t0));
      if (!bad.empty()) throw CheckpointError("bench ckpt: verification failed: " + bad[0]);
    }
    if (rep % 2 == 0) read_raw();

    // The state copied inside Save(): the caller may modify it as soon as Save() returns.
    async_copy.Save(100 + rep, state());
    stall_copy_s = std::min(stall_copy_s, slowest_stall(async_copy.Wait()));

    // The deferred snapshot, driven as the trainer drives it: save, forward + backward, fence, optimizer step.
    for (int i = 0; i < 4; ++i) expected[i].copy_(parts[i]);
    async_deferred.Save(200 + rep, state());
    BusyCompute(o.step_ms);
    async_deferred.ReleaseState();
    for (torch::Tensor& p : parts) p.add_(1.0f);  // the optimizer step modifies every saved byte
    stall_deferred_s = std::min(stall_deferred_s, slowest_stall(async_deferred.Wait()));
    // After timing: the checkpoint holds the state at the save's step, not the modified one.
    const std::string deferred_dir = run + "/deferred/checkpoints/" + checkpoint::Checkpointer::StepDirName(200 + rep);
    checkpoint::CheckpointReader reader(deferred_dir);
    for (int i = 0; i < 4; ++i) {
      reader.ReadInto("t" + std::to_string(i), {rank * (per_rank / 4)}, loaded[i]);
      if (!loaded[i].equal(expected[i])) {
        throw CheckpointError("bench ckpt: the deferred async save holds other bytes than the state it saved");
      }
    }
  }
  if (rank == 0) {
    std::ostringstream cfg;
    cfg << "{\"bytes\":" << static_cast<int64_t>(gb * 1e9) << ",\"ranks\":" << world << ",\"dir\":\"" << o.dir
        << "\",\"step_ms\":" << o.step_ms << "}";
    if (!o.json) {
      out << "# lcl bench ckpt: " << gb << " GB over " << world << " ranks in " << o.dir
          << "; best of " << o.repeats << "; reference measured in the same run\n"
          << "# resume = verify checksums + read; async_stall_copy = state copied inside Save(); async_stall ="
          << " Save() + ReleaseState() after a " << o.step_ms << " ms stand-in forward+backward\n";
    }
    Emit(out, o.json, "ckpt.save_throughput", gb / save_s, "GB/s", gb / raw_write_s, "raw write+fsync", cfg.str());
    Emit(out, o.json, "ckpt.load_throughput", gb / load_s, "GB/s", gb / raw_read_s, "raw read", cfg.str());
    Emit(out, o.json, "ckpt.resume_throughput", gb / resume_s, "GB/s", gb / raw_read_s, "raw read", cfg.str());
    Emit(out, o.json, "ckpt.async_stall_copy", stall_copy_s * 1e3, "ms", save_s * 1e3, "synchronous save (ms)",
         cfg.str());
    Emit(out, o.json, "ckpt.async_stall", stall_deferred_s * 1e3, "ms", save_s * 1e3, "synchronous save (ms)",
         cfg.str());
  }
  LCL_MPI_CHECK(MPI_Barrier(comm));
  if (rank == 0) fs::remove_all(run);
}

}  // namespace lcl::bench
