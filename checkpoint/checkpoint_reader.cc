// CheckpointReader, listing and resume resolution.
#include "checkpoint/checkpoint_reader.h"

#include <algorithm>
#include <filesystem>

#include "checkpoint/checkpointer.h"
#include "checkpoint/checksum.h"
#include "checkpoint/fs_util.h"
#include "checkpoint/safetensors.h"
#include "cluster/control_plane.h"
#include "cluster/errors.h"
#include "cluster/log.h"

namespace lcl::checkpoint {
namespace fs = std::filesystem;
namespace {

// "step_00000100" or "step_00000100.tmp" -> 100; -1 for other names.
int64_t StepOf(const std::string& name) {
  if (name.rfind("step_", 0) != 0) return -1;
  std::string digits = name.substr(5, 8);
  if (digits.size() != 8 || !std::all_of(digits.begin(), digits.end(), ::isdigit)) return -1;
  const std::string rest = name.substr(13);
  if (!rest.empty() && rest != ".tmp") return -1;
  return std::stoll(digits);
}

// "`lcl ckpt list RUN`" for a step directory RUN/checkpoints/step_N (RUN_DIR when it is laid out otherwise).
std::string ListCommand(const std::string& step_dir) {
  fs::path step = fs::path(step_dir).lexically_normal();
  if (!step.has_filename()) step = step.parent_path();  // a trailing slash
  const fs::path checkpoints = step.parent_path();
  if (checkpoints.filename() != "checkpoints") return "`lcl ckpt list RUN_DIR`";
  return "`lcl ckpt list " + (checkpoints.has_parent_path() ? checkpoints.parent_path().string() : ".") + "`";
}

// Why the manifest at `path` cannot describe a committed step ("" when it can): a 0-byte or unparsable file, or
// one without a format version (every committed manifest has one; an empty protobuf parses as all defaults).
std::string ManifestProblem(const std::string& path, Manifest* out) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return "no manifest.pb";
  if (fs::file_size(path, ec) == 0) return "manifest.pb is empty";
  Manifest m;
  if (!m.ParseFromString(ReadFile(path))) return "manifest.pb does not parse";
  if (m.format_version() == 0) return "manifest.pb has no format version";
  if (out) *out = std::move(m);
  return "";
}

}  // namespace

std::vector<CheckpointListing> ListCheckpoints(const std::string& run_dir) {
  std::vector<CheckpointListing> out;
  const fs::path dir = fs::path(run_dir) / "checkpoints";
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    const int64_t step = StepOf(name);
    if (step < 0 || !entry.is_directory()) continue;
    CheckpointListing c;
    c.name = name;
    c.path = entry.path().string();
    c.step = step;
    if (name.size() > 4 && name.substr(name.size() - 4) == ".tmp") {
      c.status = "incomplete (unfinished save: .tmp)";
    } else if (const std::string why = ManifestProblem((entry.path() / "manifest.pb").string(), nullptr);
               !why.empty()) {
      c.status = "incomplete (" + why + ")";
    } else {
      c.complete = true;
      c.status = "complete";
    }
    out.push_back(c);
  }
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a.step != b.step ? a.step < b.step : a.name < b.name; });
  return out;
}

std::string ResolveResume(const std::string& run_dir, const std::string& spec) {
  if (spec != "auto") {
    if (!fs::exists(fs::path(spec) / "manifest.pb")) {
      throw CheckpointError("--resume " + spec +
                            ": not a complete checkpoint (no manifest.pb); list the run's "
                            "checkpoints with `lcl ckpt list " +
                            run_dir + "`");
    }
    return spec;
  }
  std::vector<CheckpointListing> all = ListCheckpoints(run_dir);
  std::string newest;
  for (const auto& c : all) {
    if (c.complete) newest = c.path;
  }
  // The commit point is the rename of step_N.tmp to step_N: a complete directory is committed even if a kill
  // came before `latest` moved, so the newest complete step wins and `latest` is only cross-checked.
  const fs::path latest = fs::path(run_dir) / "checkpoints" / "latest";
  if (fs::is_regular_file(latest)) {
    std::string name = ReadFile(latest.string());
    name.erase(name.find_last_not_of(" \n\r\t") + 1);
    const fs::path named = fs::path(run_dir) / "checkpoints" / name;
    if (!ManifestProblem((named / "manifest.pb").string(), nullptr).empty()) {
      LOG(WARNING) << "`latest` names " << name << ", which is missing or incomplete; "
                   << (newest.empty() ? std::string("no complete checkpoint exists: starting fresh")
                                      : "falling back to the newest complete checkpoint " + newest);
    } else if (named.string() != newest) {
      LOG(WARNING) << "`latest` names " << name << " but " << newest << " is newer and complete (a save was "
                   << "interrupted after its commit, before `latest` moved); using " << newest;
    }
  }
  return newest;
}

CheckpointReader::CheckpointReader(const std::string& step_dir) : dir_(step_dir) {
  const std::string path = (fs::path(step_dir) / "manifest.pb").string();
  if (!fs::exists(path)) {
    throw CheckpointError(step_dir +
                          " is not a complete checkpoint: manifest.pb is missing (an unfinished "
                          "save); resume from another step (`lcl ckpt list`)");
  }
  if (const std::string why = ManifestProblem(path, &manifest_); !why.empty()) {
    throw CheckpointError(step_dir + " is not a usable checkpoint: " + why +
                          " (a corrupt or torn file); resume from another step (" + ListCommand(step_dir) + ")");
  }
  if (manifest_.format_version() > kFormatVersion) {
    throw CheckpointError(path + " has checkpoint format version " + std::to_string(manifest_.format_version()) +
                          ", newer than this lcl reads (" + std::to_string(kFormatVersion) +
                          "); load it with a newer lcl");
  }
  for (int i = 0; i < manifest_.tensors_size(); ++i) index_[manifest_.tensors(i).name()] = i;
}

CheckpointReader::~CheckpointReader() = default;

bool CheckpointReader::Has(const std::string& name) const { return index_.count(name) != 0; }

const TensorEntry& CheckpointReader::Tensor(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) {
    throw CheckpointError("checkpoint " + dir_ + " has no tensor '" + name + "' (" + std::to_string(index_.size()) +
                          " tensors; see `lcl ckpt inspect " + dir_ + "`)");
  }
  return manifest_.tensors(it->second);
}

std::vector<std::string> CheckpointReader::VerifyFiles(int part, int parts) const {
  std::vector<std::string> problems;
  for (int i = 0; i < manifest_.files_size(); ++i) {
    if (i % parts != part) continue;
    const FileEntry& f = manifest_.files(i);
    const std::string path = (fs::path(dir_) / f.name()).string();
    std::error_code ec;
    if (!fs::exists(path, ec)) {
      problems.push_back(path + ": missing (written by rank " + std::to_string(f.rank()) + ")");
      continue;
    }
    const uint64_t size = fs::file_size(path, ec);
    if (size != f.size()) {
      problems.push_back(path + ": " + std::to_string(size) + " bytes, the manifest says " + std::to_string(f.size()) +
                         (size < f.size() ? " (truncated)" : ""));
      continue;
    }
    const uint64_t sum = Xxh3File(path);
    if (sum != f.xxh3()) {
      problems.push_back(path + ": checksum " + HexDigest(sum) + ", the manifest says " + HexDigest(f.xxh3()) +
                         " (corrupt)");
    }
  }
  return problems;
}

void CheckpointReader::VerifyCollective(cluster::ControlPlane& control) const {
  std::vector<std::string> mine = VerifyFiles(control.rank(), control.size());
  std::string joined;
  for (const auto& p : mine) joined += p + "\n";
  std::vector<std::string> all = control.GatherBytes(joined);
  std::string report;
  for (const auto& p : all) report += p;
  report = control.BroadcastBytes(report);
  if (!report.empty()) {
    throw CheckpointError("checkpoint " + dir_ + " failed verification:\n" + report +
                          "resume from another step (`lcl ckpt list`) or restore the files");
  }
}

const ShardFile& CheckpointReader::Open(const std::string& file) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = open_[file];
  if (!slot) {
    const fs::path path = fs::path(dir_) / file;
    std::error_code ec;
    if (!fs::exists(path, ec)) {
      // Said at this level, where it is known that the manifest promised the file: the step cannot be read, an
      // older one can.
      throw CheckpointError(dir_ + ": shard file " + file + " listed in manifest.pb is missing; the checkpoint is " +
                            "incomplete: resume from an older step (" + ListCommand(dir_) + ")");
    }
    slot = std::make_unique<ShardFile>(path.string());
  }
  return *slot;
}

torch::Tensor CheckpointReader::Read(const std::string& name, const std::vector<int64_t>& offsets,
                                     const std::vector<int64_t>& shape) const {
  const torch::ScalarType dtype = DtypeFromName(Tensor(name).dtype(), "tensor '" + name + "'");
  torch::Tensor out = torch::empty(shape, torch::TensorOptions().dtype(dtype));
  ReadInto(name, offsets, out);
  return out;
}

void CheckpointReader::ReadInto(const std::string& name, const std::vector<int64_t>& offsets,
                                torch::Tensor& out) const {
  const TensorEntry& t = Tensor(name);
  const int dims = t.global_shape_size();
  const std::vector<int64_t> shape = out.sizes().vec();
  if (static_cast<int>(offsets.size()) != dims || static_cast<int>(shape.size()) != dims) {
    throw CheckpointError("reading '" + name + "': asked for a " + std::to_string(offsets.size()) + "-dim box of a " +
                          std::to_string(dims) + "-dim tensor");
  }
  for (int d = 0; d < dims; ++d) {
    if (offsets[d] < 0 || offsets[d] + shape[d] > t.global_shape(d)) {
      throw CheckpointError("reading '" + name + "': box outside the global shape in dim " + std::to_string(d));
    }
  }
  if (t.dtype() != DtypeName(out.scalar_type()) || !out.device().is_cpu()) {
    throw CheckpointError("reading '" + name + "' (" + t.dtype() + ") into a " + c10::toString(out.scalar_type()) +
                          " tensor on " + out.device().str() + "; read into a CPU tensor of the stored dtype");
  }
  int64_t filled = 0;
  for (const ShardSlice& s : t.shards()) {
    // The intersection of the wanted box with this shard's box, in both coordinate systems.
    bool empty = false;
    std::vector<int64_t> lo(dims), len(dims);
    for (int d = 0; d < dims; ++d) {
      lo[d] = std::max(offsets[d], s.offsets(d));
      const int64_t hi = std::min(offsets[d] + shape[d], s.offsets(d) + s.shape(d));
      len[d] = hi - lo[d];
      if (len[d] <= 0) empty = true;
    }
    if (empty && dims > 0) continue;
    const ShardFile& file = Open(s.file());
    torch::Tensor src = file.View(name);
    const std::vector<int64_t> stored(s.shape().begin(), s.shape().end());
    if (src.sizes().vec() != stored) {
      throw CheckpointError("shard " + file.path() + ": tensor '" + name + "' has shape " + ShapeString(src.sizes()) +
                            ", the manifest says " + ShapeString(stored));
    }
    torch::Tensor dst = out;
    for (int d = 0; d < dims; ++d) {
      src = src.narrow(d, lo[d] - s.offsets(d), len[d]);
      dst = dst.narrow(d, lo[d] - offsets[d], len[d]);
    }
    if (src.is_contiguous() && dst.is_contiguous()) {
      // One byte range on both sides (whole shards, row ranges): pread straight into place.
      const uint64_t at =
          static_cast<const char*>(src.data_ptr()) - static_cast<const char*>(file.View(name).data_ptr());
      file.ReadBytes(name, at, src.numel() * src.element_size(), dst.data_ptr());
    } else {
      dst.copy_(src);
    }
    filled += src.numel();
  }
  if (filled != out.numel()) {
    throw CheckpointError("checkpoint " + dir_ + ": the shards of '" + name + "' cover " + std::to_string(filled) +
                          " of the " + std::to_string(out.numel()) + " elements asked for");
  }
}

torch::Tensor CheckpointReader::ReadFull(const std::string& name) const {
  const TensorEntry& t = Tensor(name);
  std::vector<int64_t> shape(t.global_shape().begin(), t.global_shape().end());
  return Read(name, std::vector<int64_t>(shape.size(), 0), shape);
}

void CheckpointReader::ExpectTensor(const std::string& name, const std::vector<int64_t>& global_shape,
                                    torch::ScalarType dtype) const {
  const TensorEntry& t = Tensor(name);
  const std::vector<int64_t> have(t.global_shape().begin(), t.global_shape().end());
  if (have != global_shape) {
    throw CheckpointError("checkpoint " + dir_ + ": tensor '" + name + "' has shape " + ShapeString(have) +
                          " but the model expects " + ShapeString(global_shape) +
                          "; the config's model shape differs from the checkpoint's");
  }
  if (t.dtype() != DtypeName(dtype)) {
    throw CheckpointError("checkpoint " + dir_ + ": tensor '" + name + "' is " + t.dtype() + ", expected " +
                          DtypeName(dtype));
  }
}

}  // namespace lcl::checkpoint
