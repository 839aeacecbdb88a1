// LCL-Mix: one training stream interleaved from LCL episodes and LLaVA-format instruction files by probability
// (the official mix_multitrain configs). Position (epoch, index) of the stream draws its source from
// (seed, epoch, index) alone and then takes that source's item for the position, so the stream stays a pure function
// of its key: resume is exact and does not depend on the DP size.
//
//   lcl::sampler::MixedEpisodes mix(episodes, {{&llava_file, 0.5}}, seed);  // half LCL episodes, half conversations
//   lcl::sampler::Episode e = mix.Build(/*epoch=*/0, /*index=*/17);          // e.conversation empty: an LCL episode
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "sampler/episode.h"
#include "sampler/instruct.h"

namespace lcl::sampler {

struct MixSource {
  const InstructFile* file;  // must outlive the MixedEpisodes
  double probability;        // of a stream position being one of this file's conversations
};

class MixedEpisodes {
 public:
  // The LCL episodes take 1 - the sources' sum (0 leaves only conversations). Throws ConfigError for a probability
  // outside [0, 1] or a sum over 1.
  MixedEpisodes(const TrainEpisodes& episodes, std::vector<MixSource> sources, uint64_t seed);

  // The LCL episodes' epoch (one per training class): epochs and the run's plan count stream positions.
  uint64_t EpisodesPerEpoch() const { return episodes_.EpisodesPerEpoch(); }
  // 0: the LCL episode of this key; k >= 1: a conversation of sources[k - 1]. Pure.
  size_t SourceAt(uint64_t epoch, uint64_t index) const;
  // The LCL episode TrainEpisodes::Build gives for the key, or the conversation of its source: the record at stream
  // position g = epoch * EpisodesPerEpoch() + index in a seeded permutation of the file for each pass of size()
  // positions (every record equally likely, none twice in one pass). A conversation's image is `query`, its class_pos
  // the table's size + k - 1 (PoolOf gives that file's images as the replacement pool).
  Episode Build(uint64_t epoch, uint64_t index) const;
  // The replacement pool of a class position: a table class's samples, or a source's images.
  const std::vector<std::string>& PoolOf(int class_pos) const;

 private:
  size_t RecordAt(size_t source, uint64_t position) const;

  const TrainEpisodes& episodes_;
  std::vector<MixSource> sources_;
  uint64_t seed_;
  double lcl_probability_;
  // The last pass's permutation of each source, built on demand (the prefetch workers share them).
  mutable std::mutex mu_;
  mutable std::vector<uint64_t> pass_;
  mutable std::vector<std::vector<uint32_t>> order_;
};

}  // namespace lcl::sampler
