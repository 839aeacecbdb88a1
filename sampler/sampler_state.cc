// Episode stream positions and the DP split.
#include "sampler/sampler_state.h"

#include <string>

#include "cluster/errors.h"

namespace lcl::sampler {

EpisodeKey KeyAt(const SamplerState& state, uint64_t offset, uint64_t per_epoch) {
  if (per_epoch == 0) throw ConfigError("the episode stream is empty (0 episodes per epoch)");
  uint64_t pos = state.next_index + offset;
  return {state.epoch + pos / per_epoch, pos % per_epoch};
}

std::vector<EpisodeKey> GlobalBatch(const SamplerState& state, uint64_t global_batch, uint64_t per_epoch) {
  std::vector<EpisodeKey> out;
  for (uint64_t k = 0; k < global_batch; ++k) out.push_back(KeyAt(state, k, per_epoch));
  return out;
}

std::vector<EpisodeKey> RankSlice(const SamplerState& state, uint64_t global_batch, int dp_rank, int dp_size,
                                  uint64_t per_epoch) {
  if (dp_size < 1 || dp_rank < 0 || dp_rank >= dp_size) {
    throw ConfigError("DP rank " + std::to_string(dp_rank) + " of " + std::to_string(dp_size) + " is out of range");
  }
  if (global_batch % static_cast<uint64_t>(dp_size) != 0) {
    throw ConfigError("global batch " + std::to_string(global_batch) + " episodes is not divisible by dp=" +
                      std::to_string(dp_size) + "; pick a global batch that is a multiple of dp");
  }
  std::vector<EpisodeKey> out;
  for (uint64_t k = static_cast<uint64_t>(dp_rank); k < global_batch; k += static_cast<uint64_t>(dp_size)) {
    out.push_back(KeyAt(state, k, per_epoch));
  }
  return out;
}

SamplerState Advance(const SamplerState& state, uint64_t global_batch, uint64_t per_epoch) {
  EpisodeKey next = KeyAt(state, global_batch, per_epoch);
  return {next.epoch, next.index};
}

}  // namespace lcl::sampler
