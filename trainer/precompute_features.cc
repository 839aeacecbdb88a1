// `lcl data features` (see precompute_features.h).
#include "trainer/precompute_features.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <vector>

#include "cluster/errors.h"
#include "cluster/log.h"
#include "sampler/pairs_file.h"
#include "trainer/class_features.h"
#include "trainer/feature_cache.h"
#include "trainer/run_options.h"
#include "trainer/run_setup.h"

namespace lcl::trainer {
namespace {

struct TableImage {
  std::string path;
  int class_pos;  // the class it shows: a bad image is replaced from its samples
};

// The distinct images of the table, sorted by path (every rank sees the same list).
std::vector<TableImage> DistinctImages(const sampler::PairsTable& table) {
  std::map<std::string, int> shows;  // path -> first class showing it
  for (size_t c = 0; c < table.size(); ++c) {
    const sampler::ClassPairs& cls = table.classes()[c];
    for (const std::string& p : cls.samples) shows.emplace(p, static_cast<int>(c));
    for (size_t j = 0; j < cls.neighbors.size(); ++j)
      shows.emplace(cls.neighbors[j].image_path, table.NeighborIndex(c, j));
  }
  std::vector<TableImage> out;
  for (const auto& [path, cls] : shows) out.push_back({path, cls});
  return out;
}

}  // namespace

PrecomputeResult PrecomputeFeatures(cluster::MpiSession& mpi, const LoadedConfig& loaded, int batch) {
  const TrainConfig& c = loaded.config;
  if (c.data().feature_cache().empty()) {
    throw ConfigError(loaded.Where("data.feature_cache") +
                      ": data.feature_cache is empty; `lcl data features` fills the cache directory: set "
                      "--set data.feature_cache=DIR (and the same in the training config)");
  }
  if (batch < 1) throw ConfigError("--batch " + std::to_string(batch) + ": give at least 1 image per tower call");
  if (c.data().root().empty()) {
    throw ConfigError(loaded.Where("data.root") + ": data.root is empty; the images are read from the ImageNet root");
  }
  RunSetup run = SetUpRun(mpi, loaded);
  const RunModel& m = run.model;
  cluster::Communicator& world = run.ctx->world();

  bool enabled = false;
  FeatureCacheOptions options = FeatureCacheOptionsOf(c, &enabled);
  options.memory_bytes = 0;  // every entry is written once and read by later runs, not by this one
  options.required = true;   // a cache that keeps nothing would make this command a no-op
  const auto& v = m.config.vision;
  FeatureCache cache(options, TowerFingerprint(*m.model.ptr()->vision_tower), {v.num_patches(), v.hidden_size},
                     m.dtype);

  const sampler::PairsTable table = sampler::PairsTable::Read(DataPathsOf(c).train_pairs);
  const std::vector<TableImage> all = DistinctImages(table);
  std::vector<const TableImage*> mine;
  for (size_t i = static_cast<size_t>(world.rank()); i < all.size(); i += static_cast<size_t>(world.size())) {
    mine.push_back(&all[i]);
  }
  sampler::ImageLoader loader(c.data().root(), ImageSpecOf(c, v.image_size), c.data().max_bad_fraction());
  const FeatureCache::Tower tower = TowerOf(m);
  torch::NoGradGuard no_grad;
  int64_t entry_bytes = 0;
  const auto start = std::chrono::steady_clock::now();
  for (size_t at = 0; at < mine.size(); at += static_cast<size_t>(batch)) {
    std::vector<sampler::ImageRef> refs;
    std::vector<const std::vector<std::string>*> pools;
    for (size_t i = at; i < std::min(mine.size(), at + static_cast<size_t>(batch)); ++i) {
      refs.emplace_back(mine[i]->path, mine[i]->class_pos);
      pools.push_back(&table.classes()[static_cast<size_t>(mine[i]->class_pos)].samples);
    }
    const torch::Tensor pixels = LoadImages(loader, refs, pools, std::max(c.data().workers(), 1));
    cache.Features(pixels, tower);
    if (entry_bytes == 0) {
      struct stat st {};
      if (::stat(cache.EntryPath(FeatureCache::KeyOf(pixels[0].contiguous())).c_str(), &st) == 0) {
        entry_bytes = st.st_size;
      }
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const FeatureCacheStats s = cache.stats();
  torch::Tensor sums =
      torch::tensor({double(s.misses), double(s.disk_hits), double(s.corrupt), double(loader.bad())}, torch::kFloat64)
          .to(m.device);
  world.AllReduce(sums, cluster::ReduceOp::kSum);
  torch::Tensor maxes = torch::tensor({seconds, double(entry_bytes)}, torch::kFloat64).to(m.device);
  world.AllReduce(maxes, cluster::ReduceOp::kMax);
  sums = sums.cpu();
  maxes = maxes.cpu();
  PrecomputeResult r;
  r.images = static_cast<int64_t>(all.size());
  r.computed = static_cast<int64_t>(sums[0].item<double>());
  r.cached = static_cast<int64_t>(sums[1].item<double>());
  r.corrupt = static_cast<int64_t>(sums[2].item<double>());
  r.bad_images = static_cast<int64_t>(sums[3].item<double>());
  r.seconds = maxes[0].item<double>();
  r.entry_bytes = static_cast<int64_t>(maxes[1].item<double>());
  r.dir = options.dir;
  r.fingerprint = cache.fingerprint();
  LOG(INFO) << "feature cache filled: " << r.computed << " computed, " << r.cached << " already cached, " << r.corrupt
            << " corrupt replaced, of " << r.images << " images in " << r.seconds << " s";
  return r;
}

}  // namespace lcl::trainer
