// Checkpointer: shard writing on every rank, the rank-0 commit, abandonment and retention.
#include "checkpoint/checkpointer.h"

#include <algorithm>
#include <filesystem>
#include <sstream>

#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/fs_util.h"
#include "checkpoint/shard_file.h"
#include "cluster/control.pb.h"
#include "cluster/errors.h"
#include "cluster/version.h"
#include "cluster/log.h"
#include "lcl/build_info.h"

namespace lcl::checkpoint {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

std::string ShardName(int rank, int world) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "shard-r%05d-of-%05d.safetensors", rank, world);
  return buf;
}

int64_t Volume(const google::protobuf::RepeatedField<int64_t>& shape) {
  int64_t v = 1;
  for (int64_t d : shape) v *= d;
  return v;
}

// Every tensor's shards must lie inside its global shape, not overlap, and cover it exactly.
std::string CheckTiling(const TensorEntry& t) {
  const int dims = t.global_shape_size();
  int64_t covered = 0;
  for (const ShardSlice& s : t.shards()) {
    if (s.offsets_size() != dims || s.shape_size() != dims) {
      return "tensor '" + t.name() + "': rank " + std::to_string(s.rank()) +
             " gave a shard with the wrong number of dims";
    }
    for (int d = 0; d < dims; ++d) {
      if (s.offsets(d) < 0 || s.offsets(d) + s.shape(d) > t.global_shape(d)) {
        return "tensor '" + t.name() + "': rank " + std::to_string(s.rank()) + "'s shard lies outside the " +
               "global shape in dim " + std::to_string(d);
      }
    }
    covered += Volume(s.shape());
  }
  for (int a = 0; a < t.shards_size(); ++a) {
    for (int b = a + 1; b < t.shards_size(); ++b) {
      const ShardSlice &x = t.shards(a), &y = t.shards(b);
      bool overlap = Volume(x.shape()) > 0 && Volume(y.shape()) > 0;
      for (int d = 0; d < dims && overlap; ++d) {
        overlap = x.offsets(d) < y.offsets(d) + y.shape(d) && y.offsets(d) < x.offsets(d) + x.shape(d);
      }
      if (overlap) {
        return "tensor '" + t.name() + "': the shards of ranks " + std::to_string(x.rank()) + " and " +
               std::to_string(y.rank()) + " overlap (a replicated tensor must be given by one rank only)";
      }
    }
  }
  if (covered != Volume(t.global_shape())) {
    return "tensor '" + t.name() + "': the shards cover " + std::to_string(covered) + " of " +
           std::to_string(Volume(t.global_shape())) + " elements";
  }
  return "";
}

// fs::remove_all stops at the first entry that vanished under it: after an abandoned save the other ranks
// delete their own shard files while rank 0 deletes the directory, so a listing can go stale once per rank.
// Retrying with a fresh listing ends the race; each rank removes at most one file.
void RemoveTree(const fs::path& dir, int attempts) {
  std::error_code ec;
  for (int i = 0; i <= attempts && fs::exists(dir, ec); ++i) fs::remove_all(dir, ec);
  if (fs::exists(dir, ec)) LOG(WARNING) << "could not remove " << dir.string() << ": " << ec.message();
}

}  // namespace

Checkpointer::Checkpointer(MPI_Comm comm, CheckpointOptions options, cluster::Watchdog* watchdog)
    : options_(std::move(options)), control_(std::make_unique<cluster::ControlPlane>(comm, watchdog)) {
  if (options_.run_dir.empty()) throw ConfigError("checkpoint: run_dir is empty");
  if (options_.grid.world() == 0) {
    options_.grid.set_world(control_->size());
    options_.grid.set_dp(control_->size());
    options_.grid.set_tp(1);
  }
}

Checkpointer::~Checkpointer() {
  if (writer_.joinable()) writer_.join();
}

std::string Checkpointer::StepDirName(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "step_%08lld", static_cast<long long>(step));
  return buf;
}

int Checkpointer::CleanStaleTmp(const std::string& run_dir) {
  const fs::path dir = fs::path(run_dir) / "checkpoints";
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return 0;
  int removed = 0;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0) {
      LOG(WARNING) << "removing " << entry.path().string() << ": an unfinished save of an earlier run";
      fs::remove_all(entry.path(), ec);
      ++removed;
    }
  }
  return removed;
}

void Checkpointer::Pause() const {
  if (options_.phase_delay.count() > 0) std::this_thread::sleep_for(options_.phase_delay);
}

void Checkpointer::Save(int64_t step, CheckpointState state) {
  const auto t0 = Clock::now();
  if (writer_.joinable()) Wait();  // at most one save in flight
  for (LocalShard& s : state.shards) {
    if (static_cast<int64_t>(s.offsets.size()) != s.data.dim() ||
        static_cast<int64_t>(s.global_shape.size()) != s.data.dim()) {
      throw CheckpointError("checkpoint tensor '" + s.name + "': offsets and global shape need " +
                            std::to_string(s.data.dim()) + " dims");
    }
  }
  if (!options_.async) {
    for (LocalShard& s : state.shards) s.data = s.data.detach().contiguous();  // the caller waits: no copy
    Write(step, std::move(state), nullptr, 0);
    pending_.stall_ms = MsSince(t0);
    last_ = pending_;
    if (!last_.committed && options_.fail_on_error) {
      throw CheckpointError("checkpoint step " + std::to_string(step) + " failed: " + last_.reason);
    }
    return;
  }
  // The writer reads contiguous CPU tensors in place until ReleaseState(); anything else (a GPU tensor, a
  // strided view) is copied to its host buffer now.
  std::vector<torch::Tensor> live, copies;
  for (LocalShard& s : state.shards) {
    HostBuffer& host = snapshot_[s.name];
    torch::Tensor& buf = host.tensor;
    // A GPU tensor's host buffer is pinned, so its device-to-host copy runs at full DMA speed (and is reused).
    const bool pin = s.data.is_cuda();
    if (!buf.defined() || buf.sizes() != s.data.sizes() || buf.scalar_type() != s.data.scalar_type() ||
        host.pinned != pin) {
      buf = torch::empty(s.data.sizes(), torch::TensorOptions().dtype(s.data.scalar_type()).pinned_memory(pin));
      host.pinned = pin;
    }
    if (s.data.device().is_cpu() && s.data.is_contiguous()) {
      s.data = s.data.detach();
      live.push_back(s.data);
    } else {
      buf.copy_(s.data.detach());
      s.data = buf;
      live.emplace_back();
    }
    copies.push_back(buf);
  }
  lent_ = std::make_unique<Snapshot>(std::move(live), std::move(copies));
  const double stall = MsSince(t0);
  writer_ = std::thread([this, step, stall, bytes = lent_.get(), st = std::move(state)]() mutable {
    Write(step, std::move(st), bytes, stall);
  });
  // Without a deferred snapshot the caller may modify its tensors as soon as Save() returns: copy the rest now
  // (the writer writes from the live tensors meanwhile, so the copy overlaps the first writes).
  if (!options_.defer_snapshot) ReleaseState();
}

void Checkpointer::ReleaseState() {
  if (lent_) lent_->Release();
}

SaveResult Checkpointer::Wait() {
  if (writer_.joinable()) {
    writer_.join();
    lent_.reset();
    last_ = pending_;
    if (!last_.committed && options_.fail_on_error) {
      throw CheckpointError("checkpoint step " + std::to_string(last_.step) + " failed: " + last_.reason);
    }
  }
  return last_;
}

void Checkpointer::Write(int64_t step, CheckpointState state, Snapshot* bytes, double stall_ms) {
  const auto t0 = Clock::now();
  const int rank = control_->rank(), world = control_->size();
  const fs::path tmp = fs::path(options_.run_dir) / "checkpoints" / (StepDirName(step) + ".tmp");
  SaveResult result;
  result.step = step;
  result.stall_ms = stall_ms;
  ShardReport report;
  report.set_rank(rank);
  const fs::path file = tmp / ShardName(rank, world);
  try {
    fs::create_directories(tmp);
    TensorList list;
    for (const LocalShard& s : state.shards) {
      list.emplace_back(s.name, s.data);
      TensorEntry* t = report.add_tensors();
      t->set_name(s.name);
      t->set_dtype(DtypeName(s.data.scalar_type()));
      for (int64_t d : s.global_shape) t->add_global_shape(d);
      ShardSlice* slice = t->add_shards();
      slice->set_rank(rank);
      slice->set_file(file.filename().string());
      for (int64_t o : s.offsets) slice->add_offsets(o);
      for (int64_t d : s.data.sizes()) slice->add_shape(d);
    }
    *report.mutable_file() = WriteShardFile(file.string(), list, bytes);
    report.mutable_file()->set_rank(rank);
    report.mutable_rng()->set_rank(rank);
    report.mutable_rng()->set_cpu(state.rng_cpu);
    report.mutable_rng()->set_cuda(state.rng_cuda);
  } catch (const std::exception& e) {
    report.set_error(e.what());
  }
  // Every byte is written (or the save failed): a later ReleaseState() costs nothing, and one that already
  // ran counts in the stall.
  if (bytes) result.stall_ms += bytes->Close();
  Pause();  // window: shards on disk, not reported yet
  cluster::Decision decision;
  try {
    std::vector<ShardReport> reports = control_->Gather(report);
    if (rank == 0) {
      const std::string why = Commit(step, reports, state);
      decision.set_action(why.empty() ? cluster::Decision::SAVE : cluster::Decision::ABORT);
      decision.set_step(step);
      decision.set_reason(why);
    }
    control_->Broadcast(&decision);
  } catch (const std::exception& e) {
    decision.set_action(cluster::Decision::ABORT);
    decision.set_reason(e.what());
  }
  result.committed = decision.action() == cluster::Decision::SAVE;
  result.reason = decision.reason();
  result.bytes = report.file().size();
  if (!result.committed) {
    std::error_code ec;
    fs::remove(file, ec);
    if (rank == 0) RemoveTree(tmp, world);
    LOG(WARNING) << "checkpoint step " << step << " abandoned on every rank: " << result.reason
                 << (options_.fail_on_error ? "" : "; training goes on");
  } else if (rank == 0) {
    LOG(INFO) << "checkpoint step " << step << " committed (" << world << " shards, stall " << result.stall_ms
              << " ms, write " << MsSince(t0) << " ms)";
  }
  result.write_ms = MsSince(t0);
  pending_ = result;
}

std::string Checkpointer::Commit(int64_t step, const std::vector<ShardReport>& reports, const CheckpointState& state) {
  for (const ShardReport& r : reports) {
    if (!r.error().empty()) return "rank " + std::to_string(r.rank()) + ": " + r.error();
  }
  Manifest m;
  m.set_format_version(kFormatVersion);
  m.set_step(step);
  m.set_config(state.config);
  *m.mutable_grid() = options_.grid;
  *m.mutable_sampler() = state.sampler;
  m.set_optimizer_step(state.optimizer_step);
  m.set_metrics_step(state.metrics_step);
  m.set_lcl_version(std::string(LCL_VERSION) + " " + cluster::GitRevision());
  m.set_created_unix_ms(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
  for (const auto& [k, v] : state.metadata) (*m.mutable_metadata())[k] = v;
  std::map<std::string, TensorEntry*> by_name;
  for (const ShardReport& r : reports) {
    *m.add_files() = r.file();
    *m.add_rng() = r.rng();
    for (const TensorEntry& t : r.tensors()) {
      auto it = by_name.find(t.name());
      if (it == by_name.end()) {
        TensorEntry* added = m.add_tensors();
        *added = t;
        by_name[t.name()] = added;
        continue;
      }
      TensorEntry* have = it->second;
      if (have->dtype() != t.dtype() || have->global_shape_size() != t.global_shape_size() ||
          !std::equal(t.global_shape().begin(), t.global_shape().end(), have->global_shape().begin())) {
        return "tensor '" + t.name() + "': rank " + std::to_string(r.rank()) + " disagrees with rank " +
               std::to_string(have->shards(0).rank()) + " on its dtype or global shape";
      }
      *have->add_shards() = t.shards(0);
    }
  }
  for (const TensorEntry& t : m.tensors()) {
    std::string bad = CheckTiling(t);
    if (!bad.empty()) return bad;
  }
  const fs::path dir = fs::path(options_.run_dir) / "checkpoints";
  const fs::path tmp = dir / (StepDirName(step) + ".tmp");
  const fs::path final_dir = dir / StepDirName(step);
  try {
    Pause();  // window: reports in, manifest not written
    WriteFileAtomic((tmp / "manifest.pb").string(), m.SerializeAsString());
    Pause();  // window: manifest written, directory not renamed
    std::error_code ec;
    if (fs::exists(final_dir)) {
      LOG(WARNING) << "replacing the existing " << final_dir.string();
      fs::remove_all(final_dir, ec);
    }
    fs::rename(tmp, final_dir);
  } catch (const std::exception& e) {
    return std::string("rank 0 could not commit: ") + e.what();
  }
  // The rename is the commit point: from here the step is a complete checkpoint that --resume auto loads, so a
  // failure below is a warning about `latest` (a pointer `auto` only cross-checks), not an abandoned save.
  try {
    FsyncDir(dir.string());
    Pause();  // window: renamed, `latest` not moved
    WriteFileAtomic((dir / "latest").string(), StepDirName(step) + "\n");
  } catch (const std::exception& e) {
    LOG(WARNING) << "checkpoint step " << step << " is committed (" << final_dir.string()
                 << "), but `latest` could not be updated: " << e.what()
                 << "; --resume auto still takes the newest complete step";
  }
  Retain(step);
  return "";
}

void Checkpointer::Retain(int64_t committed_step) {
  if (options_.keep_last <= 0) return;
  std::vector<CheckpointListing> all = ListCheckpoints(options_.run_dir);
  std::vector<int64_t> complete;
  for (const auto& c : all) {
    if (c.complete) complete.push_back(c.step);
  }
  std::sort(complete.rbegin(), complete.rend());
  for (size_t i = 0; i < complete.size(); ++i) {
    const int64_t s = complete[i];
    const bool keep = s == committed_step || static_cast<int>(i) < options_.keep_last ||
                      (options_.keep_every > 0 && s % options_.keep_every == 0);
    if (keep) continue;
    std::error_code ec;
    fs::remove_all(fs::path(options_.run_dir) / "checkpoints" / StepDirName(s), ec);
    VLOG(1) << "retention: removed " << StepDirName(s);
  }
}

}  // namespace lcl::checkpoint
