// The per-rank data pipeline: episode keys -> episodes -> tokenized prompts + preprocessed images,
// collated into a micro-batch of tensors. Build() is thread-safe; run it under a Prefetcher to
// overlap with training.
//
//   EpisodePipeline pipeline(train_episodes, tokenizer, prompt_config, loader);
//   auto keys_of = [&](uint64_t k) {
//     return MicroBatchKeys(start, global_batch, micro_batch, rank, dp, per_epoch, k);
//   };
//   Prefetcher<MicroBatch> prefetch([&](uint64_t k) { return pipeline.Build(keys_of(k)); }, /*workers=*/2,
//                                   /*depth=*/4);
#pragma once

#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

#include "sampler/episode.h"
#include "sampler/image_io.h"
#include "sampler/prompt.h"
#include "sampler/sampler_state.h"

namespace lcl::sampler {

struct MicroBatch {
  std::vector<EpisodeKey> keys;
  torch::Tensor input_ids;              // [B, T] int64, right-padded with the tokenizer's pad id
  torch::Tensor labels;                 // [B, T] int64, kIgnoreIndex outside the answers and on padding
  torch::Tensor attention_mask;         // [B, T] int64, 1 on real tokens (packed: the episode's number in its row)
  torch::Tensor position_ids;           // undefined, or [R, T] int64 when packed (sampler/packing.h)
  torch::Tensor images;                 // [N, 3, S, S] float32, every episode's images in block order, episode-major
  std::vector<int> images_per_episode;  // [B], sums to N
  std::vector<int> shots;               // [B], after any max-length reduction
  std::vector<int> requested_shots;     // [B], before it (shots[i] < requested_shots[i]: example pairs dropped)
  std::vector<int> requested_tokens;    // [B], the token count at requested_shots[i]
  int conversations = 0;                // episodes that are instruction conversations (LCL-Mix), not LCL episodes
};

class EpisodePipeline {
 public:
  // Training episodes; bad images are replaced from the same class's samples. The referenced
  // objects must outlive the pipeline.
  EpisodePipeline(const TrainEpisodes& episodes, const Tokenizer& tokenizer, PromptConfig prompt, ImageLoader& loader);
  // Evaluation episodes (key.index is the eval episode; key.epoch is ignored).
  EpisodePipeline(const EvalEpisodes& episodes, const std::vector<TestClass>& classes, const Tokenizer& tokenizer,
                  PromptConfig prompt, ImageLoader& loader);

  // Any other episode source (e.g. ISEKAI files): `episode_of` builds an episode, `pool_of` gives the images
  // a bad image of ImageRef::class_pos is replaced from. Both must stay valid while the pipeline lives.
  EpisodePipeline(std::function<Episode(const EpisodeKey&)> episode_of,
                  std::function<std::vector<std::string>(int)> pool_of, const Tokenizer& tokenizer, PromptConfig prompt,
                  ImageLoader& loader);

  MicroBatch Build(const std::vector<EpisodeKey>& keys) const;

 private:
  std::function<Episode(const EpisodeKey&)> episode_of_;
  std::function<std::vector<std::string>(int)> pool_of_;  // replacement candidates for a class
  const Tokenizer& tokenizer_;
  PromptConfig prompt_;
  ImageLoader& loader_;
};

// The keys of micro-batch k of one DP rank, counting from `start`: step k / m, micro-batch k % m of
// the rank's slice, where m = global_batch / dp / micro_batch. Throws ConfigError when the sizes do
// not divide.
std::vector<EpisodeKey> MicroBatchKeys(const SamplerState& start, uint64_t global_batch, uint64_t micro_batch,
                                       int dp_rank, int dp_size, uint64_t per_epoch, uint64_t k);

}  // namespace lcl::sampler
