// Where a run stands in the episode stream, and which episodes each DP rank builds. The state is
// just (epoch, next index): episodes are pure functions of their key, so resume is exact under any
// DP size.
//
//   lcl::sampler::SamplerState state;  // {0, 0}
//   auto mine = lcl::sampler::RankSlice(state, /*global_batch=*/8, dp_rank, dp_size, per_epoch);
//   state = lcl::sampler::Advance(state, 8, per_epoch);
#pragma once

#include <cstdint>
#include <vector>

namespace lcl::sampler {

struct EpisodeKey {
  uint64_t epoch = 0;
  uint64_t index = 0;
  bool operator==(const EpisodeKey& o) const { return epoch == o.epoch && index == o.index; }
};

struct SamplerState {
  uint64_t epoch = 0;
  uint64_t next_index = 0;  // first episode of the next global batch, within `epoch`
  bool operator==(const SamplerState& o) const { return epoch == o.epoch && next_index == o.next_index; }
};

// The key `offset` positions after `state` in the endless stream (epochs follow one another; a
// global batch may straddle an epoch boundary, so no episode is ever dropped).
EpisodeKey KeyAt(const SamplerState& state, uint64_t offset, uint64_t per_epoch);

// The whole global batch in order.
std::vector<EpisodeKey> GlobalBatch(const SamplerState& state, uint64_t global_batch, uint64_t per_epoch);

// DP rank r of dp builds global positions r, r+dp, r+2dp, ... of the batch. Throws lcl::ConfigError
// when dp does not divide global_batch (ranks would get unequal work) or r is out of range.
std::vector<EpisodeKey> RankSlice(const SamplerState& state, uint64_t global_batch, int dp_rank, int dp_size,
                                  uint64_t per_epoch);

// The state after one global batch.
SamplerState Advance(const SamplerState& state, uint64_t global_batch, uint64_t per_epoch);

}  // namespace lcl::sampler
