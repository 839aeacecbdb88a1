// The frozen tower's features, computed once per image (data.feature_cache): the tower is frozen and its input a
// deterministic function of the image, so its output (the selected layer, CLS dropped, before the projector) can be
// kept. Two tiers in front of the tower: a host-memory LRU bounded in bytes, then a directory of safetensors entries
// that every rank and every later run shares. An entry is keyed by content, not by name: the key is XXH3-128 of the
// preprocessed pixels the tower would see (so a changed image file, another padding colour or size, a jigsaw crop
// each get their own entry, and mtime tricks cannot serve a stale one), under a directory named by the tower's
// fingerprint (its weights, the layers it runs, the dtype), so another model never reads them. Each entry carries
// the XXH3-64 of its tensor bytes: a torn or flipped entry is detected, reported, recomputed and replaced, never used.
//
//   FeatureCache cache(FeatureCacheOptionsOf(config), TowerFingerprint(*model->vision_tower), {256, 1024}, kBFloat16);
//   torch::Tensor f = cache.Features(pixels, [&](const torch::Tensor& px) { return model->vision_tower(px); });
//
// Disk layout: <dir>/LCL_FEATURE_CACHE (the marker), <dir>/<fingerprint>/<key[0:2]>/<key>.safetensors, one tensor
// "features" [P, Cv] with metadata {format, tower, key, xxh3}. Writes go to a unique temporary name, then rename(2):
// ranks filling the same entry at once never see half of one.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "model/clip_vision.h"

namespace lcl::trainer {

struct FeatureCacheOptions {
  std::string dir;                          // empty: the memory tier only
  int64_t memory_bytes = int64_t(1) << 30;  // host-memory LRU budget; 0 = no memory tier
  // A disk tier that cannot be used (not creatable, not writable, not a cache, full) is a ConfigError/DataError
  // instead of a warning and a run without it.
  bool required = false;
};

struct FeatureCacheStats {
  int64_t memory_hits = 0;
  int64_t disk_hits = 0;
  int64_t misses = 0;          // images the tower ran on
  int64_t corrupt = 0;         // disk entries that failed their checks, recomputed and replaced
  int64_t written = 0;         // disk entries written
  int64_t write_failures = 0;  // writes that failed (the disk tier stops writing after the first)
};

// 32 hex digits naming the tower: its parameters that the features depend on (the embeddings, pre-LayerNorm and the
// layers it runs; not the unused top layers or post-LayerNorm), with their names, dtypes and shapes, and the layer
// count, and the device kind (cpu, cuda: their kernels round differently). Parameters on a GPU are copied to the
// host to be hashed (once per run).
std::string TowerFingerprint(lcl::model::ClipVisionModelImpl& tower);

class FeatureCache {
 public:
  // [M, 3, S, S] host float32 pixels -> [M, P, Cv] features (any device, any dtype; stored as `dtype`).
  using Tower = std::function<torch::Tensor(const torch::Tensor& pixels)>;

  // Opens (creates) the disk tier under `options.dir` for the tower `fingerprint`, whose features are
  // `feature_shape` ([P, Cv]) in `dtype`. A directory that cannot serve as the cache: a warning naming it, the reason
  // and the fix, and the memory tier alone (or an error when options.required). Warns when the directory holds
  // other towers' entries (never read for this one).
  FeatureCache(FeatureCacheOptions options, std::string fingerprint, std::vector<int64_t> feature_shape,
               torch::ScalarType dtype);

  // The tower's features for every image of `pixels` [N, 3, S, S] (host float32, contiguous), as a host tensor
  // [N, P, Cv] in the cache's dtype: cached ones from memory or disk, the others from one call of `tower` on those
  // images (an image repeated in the batch is computed once), then stored in both tiers.
  torch::Tensor Features(const torch::Tensor& pixels, const Tower& tower);

  // The content key of one image [3, S, S] (host float32, contiguous).
  static std::string KeyOf(const torch::Tensor& image);
  // Where the entry of `key` lives (whether or not it exists); empty without a disk tier.
  std::string EntryPath(const std::string& key) const;

  FeatureCacheStats stats() const;
  bool disk_enabled() const { return disk_reads_; }
  const std::string& fingerprint() const { return fingerprint_; }

 private:
  torch::Tensor Lookup(const std::string& key);  // undefined on a miss
  torch::Tensor ReadEntry(const std::string& key);
  void Store(const std::string& key, const torch::Tensor& features);  // [P, Cv] host, contiguous, cache dtype
  void Remember(const std::string& key, const torch::Tensor& features);
  void WriteEntry(const std::string& key, const torch::Tensor& features);
  void OpenDisk();
  void DiskUnusable(const std::string& why, const std::string& fix);

  FeatureCacheOptions options_;
  std::string fingerprint_;
  std::vector<int64_t> shape_;  // [P, Cv]
  torch::ScalarType dtype_;
  std::string tower_dir_;  // <dir>/<fingerprint>
  bool disk_reads_ = false;
  bool disk_writes_ = false;
  mutable std::mutex mu_;
  FeatureCacheStats stats_;
  // The memory tier: most recently used first.
  std::list<std::pair<std::string, torch::Tensor>> lru_;
  std::unordered_map<std::string, std::list<std::pair<std::string, torch::Tensor>>::iterator> index_;
  int64_t memory_used_ = 0;
};

}  // namespace lcl::trainer
