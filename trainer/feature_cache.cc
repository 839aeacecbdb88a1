// The tower-feature cache: content keys, the memory LRU, and the checked disk entries.
#include "trainer/feature_cache.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <utility>

#include "checkpoint/checksum.h"
#include "checkpoint/safetensors.h"
#include "cluster/errors.h"
#include "cluster/log.h"

namespace lcl::trainer {
namespace {

namespace fs = std::filesystem;

constexpr char kMarker[] = "LCL_FEATURE_CACHE";
constexpr char kFormat[] = "lcl-tower-features-1";
constexpr char kTensor[] = "features";

// "vision_model.encoder.layers.<i>.": the layer index, or -1 for a name outside the encoder's layers.
int LayerOf(const std::string& name) {
  const std::string prefix = "encoder.layers.";
  const size_t at = name.find(prefix);
  if (at == std::string::npos) return -1;
  return std::atoi(name.c_str() + at + prefix.size());
}

bool IsFingerprint(const std::string& name) {
  return name.size() == 32 && name.find_first_not_of("0123456789abcdef") == std::string::npos;
}

// A name no other writer (rank, thread, process) uses at the same time.
std::string TempName(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  return path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
}

// Writes `bytes` to `path` through a temporary file and rename(2); returns "" or the reason it failed (the
// temporary file is removed).
std::string WriteThroughRename(const std::string& path, const std::function<bool(FILE*)>& write) {
  const std::string tmp = TempName(path);
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) return std::strerror(errno);
  bool ok = write(f);
  int err = ok ? 0 : errno;
  if (std::fclose(f) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (ok && std::rename(tmp.c_str(), path.c_str()) != 0) {
    ok = false;
    err = errno;
  }
  if (ok) return "";
  std::error_code ec;
  fs::remove(tmp, ec);
  return std::strerror(err != 0 ? err : EIO);
}

}  // namespace

std::string TowerFingerprint(lcl::model::ClipVisionModelImpl& tower) {
  checkpoint::Xxh3 hi, lo;  // two streams: 128 bits, like the image keys
  auto add = [&](const std::string& text) {
    hi.Update(text.data(), text.size());
    lo.Update("~", 1);
    lo.Update(text.data(), text.size());
  };
  // The device kind too: CPU and CUDA kernels round differently, and a run must get the features it would compute.
  const std::vector<torch::Tensor> params = tower.parameters();
  const std::string device = params.empty() ? "cpu" : c10::DeviceTypeName(params.front().device().type(), true);
  add(std::string(kFormat) + " layers_used=" + std::to_string(tower.layers_used()) + " device=" + device);
  for (const auto& item : tower.named_parameters(/*recurse=*/true)) {
    const std::string& name = item.key();
    const int layer = LayerOf(name);
    if (layer >= tower.layers_used() || name.find("post_layernorm") != std::string::npos) continue;
    const torch::Tensor t = item.value().detach().to(torch::kCPU).contiguous();
    add(name + " " + checkpoint::DtypeName(t.scalar_type()) + " " + checkpoint::ShapeString(t.sizes()));
    hi.Update(t.data_ptr(), t.nbytes());
    lo.Update(t.data_ptr(), t.nbytes());
  }
  return checkpoint::HexDigest(hi.Digest()) + checkpoint::HexDigest(lo.Digest());
}

FeatureCache::FeatureCache(FeatureCacheOptions options, std::string fingerprint, std::vector<int64_t> feature_shape,
                           torch::ScalarType dtype)
    : options_(std::move(options)),
      fingerprint_(std::move(fingerprint)),
      shape_(std::move(feature_shape)),
      dtype_(dtype) {
  CHECK_EQ(shape_.size(), 2u) << "features are [P, Cv]";
  if (!options_.dir.empty()) OpenDisk();
}

void FeatureCache::DiskUnusable(const std::string& why, const std::string& fix) {
  const std::string message = "data.feature_cache '" + options_.dir + "' " + why + "; " + fix;
  if (options_.required) {
    throw ConfigError(message + " (data.feature_cache_required=true; set it false to run without the disk cache)");
  }
  LOG(WARNING) << message << ". The run goes on without the disk cache (features are computed, and kept in memory "
               << "only; set data.feature_cache_required=true to make this an error)";
  disk_reads_ = disk_writes_ = false;
}

void FeatureCache::OpenDisk() {
  const fs::path dir(options_.dir);
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) {
    return DiskUnusable("is not a directory", "point it at a directory (it is created when missing)");
  }
  fs::create_directories(dir, ec);
  if (ec) return DiskUnusable("cannot be created (" + ec.message() + ")", "point it at a writable place");
  // A directory of something else (a data root, a run directory) is never filled with cache entries.
  if (!fs::exists(dir / kMarker, ec)) {
    // Another rank may be creating the cache at this moment: its marker's temporary file is not foreign, and
    // what it writes after the marker (the tower directory) only appears once the marker exists.
    std::vector<std::string> found;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      const std::string name = e.path().filename().string();
      if (name.rfind(kMarker, 0) != 0 && found.size() < 3) found.push_back(name);
    }
    if (!found.empty() && !fs::exists(dir / kMarker, ec)) {
      std::string list;
      for (const std::string& f : found) list += (list.empty() ? "" : ", ") + f;
      return DiskUnusable("holds files that are not a feature cache (" + list + ", ...; no " + kMarker + " marker)",
                          "point it at an empty or new directory");
    }
    const std::string err = WriteThroughRename((dir / kMarker).string(), [](FILE* f) {
      const char text[] = "lcl tower-feature cache (trainer/feature_cache.h); safe to delete\n";
      return std::fwrite(text, 1, sizeof(text) - 1, f) == sizeof(text) - 1;
    });
    if (!err.empty() && !fs::exists(dir / kMarker, ec)) {
      return DiskUnusable("is not writable (" + err + ")", "point it at a writable place");
    }
  }
  tower_dir_ = (dir / fingerprint_).string();
  fs::create_directories(tower_dir_, ec);
  if (ec) return DiskUnusable("is not writable (" + ec.message() + ")", "point it at a writable place");
  // Proven writable by writing, not by permission bits (root ignores them; read-only mounts do not).
  const std::string probe = tower_dir_ + "/.probe";
  const std::string err = WriteThroughRename(probe, [](FILE* f) { return std::fputc('x', f) != EOF; });
  if (!err.empty()) return DiskUnusable("is not writable (" + err + ")", "point it at a writable place");
  fs::remove(probe, ec);
  disk_reads_ = disk_writes_ = true;
  std::vector<std::string> others;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (e.is_directory() && IsFingerprint(name) && name != fingerprint_) others.push_back(name);
  }
  if (!others.empty()) {
    LOG(WARNING) << "data.feature_cache '" << options_.dir << "' also holds the features of " << others.size()
                 << " other tower(s) (" << others.front() << (others.size() > 1 ? ", ..." : "")
                 << "): another model or dtype. They are never read for this tower (" << fingerprint_
                 << "); delete those directories to free their space";
  }
}

std::string FeatureCache::KeyOf(const torch::Tensor& image) {
  CHECK(image.device().is_cpu() && image.is_contiguous() && image.scalar_type() == torch::kFloat32)
      << "feature cache keys hash host float32 pixels";
  return checkpoint::Xxh3Hex128(image.data_ptr(), image.nbytes());
}

std::string FeatureCache::EntryPath(const std::string& key) const {
  if (tower_dir_.empty()) return "";
  return tower_dir_ + "/" + key.substr(0, 2) + "/" + key + ".safetensors";
}

FeatureCacheStats FeatureCache::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

torch::Tensor FeatureCache::Features(const torch::Tensor& pixels, const Tower& tower) {
  CHECK(pixels.dim() == 4 && pixels.device().is_cpu() && pixels.scalar_type() == torch::kFloat32)
      << "feature cache input is [N, 3, S, S] host float32";
  const torch::Tensor px = pixels.contiguous();
  const int64_t n = px.size(0);
  torch::Tensor out = torch::empty({n, shape_[0], shape_[1]}, torch::TensorOptions().dtype(dtype_));  // [N, P, Cv]
  std::map<std::string, std::vector<int64_t>> missing;  // key -> the batch positions showing that image
  std::vector<int64_t> first;                           // one position per missing key, in batch order
  std::vector<std::string> first_keys;                  // their keys
  for (int64_t i = 0; i < n; ++i) {
    const std::string key = KeyOf(px[i]);
    auto seen = missing.find(key);
    if (seen != missing.end()) {
      seen->second.push_back(i);
      continue;
    }
    torch::Tensor f = Lookup(key);
    if (f.defined()) {
      out[i].copy_(f);
      continue;
    }
    missing[key].push_back(i);
    first.push_back(i);
    first_keys.push_back(key);
  }
  if (first.empty()) return out;
  const torch::Tensor computed =
      tower(px.index_select(0, torch::tensor(first, torch::kInt64))).to(torch::kCPU, dtype_).contiguous();
  CHECK(computed.dim() == 3 && computed.size(0) == int64_t(first.size()) && computed.size(1) == shape_[0] &&
        computed.size(2) == shape_[1])
      << "the tower returned " << computed.sizes() << " for " << first.size() << " images";
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.misses += int64_t(first.size());
  }
  for (size_t j = 0; j < first.size(); ++j) {
    const std::string& key = first_keys[j];
    const torch::Tensor f = computed[int64_t(j)].clone();  // [P, Cv], owns its bytes
    for (int64_t i : missing[key]) out[i].copy_(f);
    Store(key, f);
  }
  return out;
}

torch::Tensor FeatureCache::Lookup(const std::string& key) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = index_.find(key);
    if (it != index_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
      ++stats_.memory_hits;
      return it->second->second;
    }
  }
  if (!disk_reads_) return torch::Tensor();
  torch::Tensor f = ReadEntry(key);
  if (f.defined()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.disk_hits;
    }
    Remember(key, f);
  }
  return f;
}

torch::Tensor FeatureCache::ReadEntry(const std::string& key) {
  const std::string path = EntryPath(key);
  std::error_code ec;
  if (!fs::exists(path, ec)) return torch::Tensor();
  std::string bad;  // why the entry cannot be used
  torch::Tensor f;
  try {
    checkpoint::SafetensorsFile file(path);
    const auto& meta = file.metadata();
    auto field = [&](const char* k) {
      auto it = meta.find(k);
      return it == meta.end() ? std::string() : it->second;
    };
    if (field("format") != kFormat || field("tower") != fingerprint_ || field("key") != key) {
      bad = "its metadata names format '" + field("format") + "', tower '" + field("tower") + "', key '" +
            field("key") + "'";
    } else if (!file.Has(kTensor)) {
      bad = "it has no tensor '" + std::string(kTensor) + "'";
    } else {
      const checkpoint::SafetensorInfo& info = file.Info(kTensor);
      if (info.dtype != checkpoint::DtypeName(dtype_) || info.shape != shape_) {
        bad = "it holds " + info.dtype + " " + checkpoint::ShapeString(info.shape) + ", expected " +
              checkpoint::DtypeName(dtype_) + " " + checkpoint::ShapeString(shape_);
      } else {
        f = file.Read(kTensor);
        const std::string sum = checkpoint::HexDigest([&] {
          checkpoint::Xxh3 h;
          h.Update(f.data_ptr(), f.nbytes());
          return h.Digest();
        }());
        if (sum != field("xxh3")) bad = "its checksum is " + sum + ", the entry says " + field("xxh3");
      }
    }
  } catch (const Error& e) {
    bad = e.what();
  }
  if (bad.empty()) return f;
  LOG(WARNING) << "feature cache entry " << path << " is corrupt (" << bad
               << "); not used: the tower recomputes it and the entry is replaced";
  fs::remove(path, ec);
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.corrupt;
  return torch::Tensor();
}

void FeatureCache::Store(const std::string& key, const torch::Tensor& features) {
  Remember(key, features);
  if (disk_writes_) WriteEntry(key, features);
}

void FeatureCache::Remember(const std::string& key, const torch::Tensor& features) {
  const int64_t bytes = int64_t(features.nbytes());
  std::lock_guard<std::mutex> lock(mu_);
  if (bytes > options_.memory_bytes || index_.count(key)) return;
  while (memory_used_ + bytes > options_.memory_bytes && !lru_.empty()) {
    memory_used_ -= int64_t(lru_.back().second.nbytes());
    index_.erase(lru_.back().first);
    lru_.pop_back();
  }
  lru_.emplace_front(key, features);
  index_[key] = lru_.begin();
  memory_used_ += bytes;
}

void FeatureCache::WriteEntry(const std::string& key, const torch::Tensor& features) {
  const std::string path = EntryPath(key);
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  checkpoint::Xxh3 h;
  h.Update(features.data_ptr(), features.nbytes());
  const std::map<std::string, std::string> meta = {
      {"format", kFormat}, {"tower", fingerprint_}, {"key", key}, {"xxh3", checkpoint::HexDigest(h.Digest())}};
  std::string err = ec ? ec.message() : "";
  if (err.empty()) {
    err = WriteThroughRename(path, [&](FILE* f) {
      bool ok = true;
      checkpoint::EncodeSafetensors(path, {{kTensor, features}}, meta, [&](const void* data, size_t size) {
        ok = ok && std::fwrite(data, 1, size, f) == size;
      });
      return ok && std::fflush(f) == 0;
    });
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (err.empty()) {
    ++stats_.written;
    return;
  }
  ++stats_.write_failures;
  disk_writes_ = false;
  const std::string message = "data.feature_cache: writing " + path + " failed (" + err + ")";
  if (options_.required) {
    throw DataError(message + "; free space or point data.feature_cache elsewhere (data.feature_cache_required=true)");
  }
  LOG(WARNING) << message << "; no more entries are written in this run (existing ones are still read). Free space "
               << "or point data.feature_cache elsewhere; set data.feature_cache_required=true to make this an error";
}

}  // namespace lcl::trainer
