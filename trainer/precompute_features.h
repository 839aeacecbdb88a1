// `lcl data features`: fills the tower-feature cache (data.feature_cache, trainer/feature_cache.h) ahead of
// training, spread over the ranks, so that the first epoch does not run the frozen tower either. The images are the
// distinct paths of the train pairs table (every class's samples and neighbour images, the images episodes draw),
// loaded exactly as training loads them (the same ImageLoader, spec, device, dtype and tower), so an entry written
// here is the one training looks up. Jigsaw pieces (data.jigsaw) are other pixels: they are filled on the fly.
//
//   PrecomputeResult r = PrecomputeFeatures(mpi, LoadTrainConfig("launch/configs/lcl_7b.pbtxt", overrides), 16);
//   // r.images distinct images, r.computed by the tower now, r.cached already there (summed over ranks)
#pragma once

#include <cstdint>
#include <string>

#include "cluster/mpi_session.h"
#include "trainer/train_config.h"

namespace lcl::trainer {

struct PrecomputeResult {
  int64_t images = 0;       // distinct images of the table
  int64_t computed = 0;     // run through the tower and written now
  int64_t cached = 0;       // already in the cache (not recomputed)
  int64_t corrupt = 0;      // entries found corrupt, recomputed and replaced
  int64_t bad_images = 0;   // unreadable images replaced from their class (as in training)
  int64_t entry_bytes = 0;  // bytes of one entry on disk
  double seconds = 0;       // the slowest rank's time over its share
  std::string dir;
  std::string fingerprint;
};

// Collective over the world: rank r takes the sorted distinct images i with i % world == r, `batch` per tower call.
// Needs data.feature_cache (ConfigError otherwise, naming the field); a directory that cannot be used is the
// ConfigError the required cache gives, since nothing could be kept. Counts are summed over the ranks.
PrecomputeResult PrecomputeFeatures(cluster::MpiSession& mpi, const LoadedConfig& loaded, int batch);

}  // namespace lcl::trainer
