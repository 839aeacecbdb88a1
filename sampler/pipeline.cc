// Episode -> tensors for one micro-batch, and the micro-batch key arithmetic.
#include "sampler/pipeline.h"

#include <algorithm>
#include <cstring>

#include "cluster/errors.h"

namespace lcl::sampler {

EpisodePipeline::EpisodePipeline(const TrainEpisodes& episodes, const Tokenizer& tokenizer, PromptConfig prompt,
                                 ImageLoader& loader)
    : episode_of_([&episodes](const EpisodeKey& k) { return episodes.Build(k.epoch, k.index); }),
      pool_of_([&episodes](int c) { return episodes.table().classes()[c].samples; }),
      tokenizer_(tokenizer),
      prompt_(std::move(prompt)),
      loader_(loader) {}

EpisodePipeline::EpisodePipeline(const EvalEpisodes& episodes, const std::vector<TestClass>& classes,
                                 const Tokenizer& tokenizer, PromptConfig prompt, ImageLoader& loader)
    : episode_of_([&episodes](const EpisodeKey& k) { return episodes.Build(k.index); }),
      pool_of_([&classes](int c) { return classes[c].context_samples; }),
      tokenizer_(tokenizer),
      prompt_(std::move(prompt)),
      loader_(loader) {}

EpisodePipeline::EpisodePipeline(std::function<Episode(const EpisodeKey&)> episode_of,
                                 std::function<std::vector<std::string>(int)> pool_of, const Tokenizer& tokenizer,
                                 PromptConfig prompt, ImageLoader& loader)
    : episode_of_(std::move(episode_of)),
      pool_of_(std::move(pool_of)),
      tokenizer_(tokenizer),
      prompt_(std::move(prompt)),
      loader_(loader) {}

MicroBatch EpisodePipeline::Build(const std::vector<EpisodeKey>& keys) const {
  MicroBatch mb;
  mb.keys = keys;
  std::vector<TokenizedPrompt> prompts;
  int64_t num_images = 0;
  for (const EpisodeKey& key : keys) {
    const Episode episode = episode_of_(key);
    mb.conversations += episode.conversation.empty() ? 0 : 1;
    prompts.push_back(TokenizeEpisode(episode, tokenizer_, prompt_));
    mb.images_per_episode.push_back(static_cast<int>(prompts.back().images.size()));
    mb.shots.push_back(prompts.back().shot);
    mb.requested_shots.push_back(prompts.back().requested_shot);
    mb.requested_tokens.push_back(prompts.back().requested_tokens);
    num_images += mb.images_per_episode.back();
  }
  // Images go straight into the batch with memcpy: torch::stack or copy_ would run on LibTorch's
  // OpenMP pool, whose spinning threads compete with the decoders on a small machine.
  const int s = loader_.spec().size;
  mb.images = torch::empty({num_images, 3, s, s}, torch::kFloat32);
  const size_t image_floats = size_t(3) * size_t(s) * size_t(s);
  float* dst = mb.images.data_ptr<float>();
  for (const TokenizedPrompt& p : prompts) {
    for (const ImageRef& ref : p.images) {
      torch::Tensor one = loader_.Load(ref, pool_of_(ref.class_pos));
      std::memcpy(dst, one.data_ptr<float>(), image_floats * sizeof(float));
      dst += image_floats;
    }
  }
  size_t t = 0;
  for (const TokenizedPrompt& p : prompts) t = std::max(t, p.input_ids.size());
  const int64_t b = static_cast<int64_t>(prompts.size());
  mb.input_ids = torch::empty({b, int64_t(t)}, torch::kInt64);
  mb.labels = torch::empty({b, int64_t(t)}, torch::kInt64);
  mb.attention_mask = torch::empty({b, int64_t(t)}, torch::kInt64);
  for (int64_t i = 0; i < b; ++i) {
    const TokenizedPrompt& p = prompts[size_t(i)];
    int64_t* ids = mb.input_ids.data_ptr<int64_t>() + i * int64_t(t);
    int64_t* labels = mb.labels.data_ptr<int64_t>() + i * int64_t(t);
    int64_t* mask = mb.attention_mask.data_ptr<int64_t>() + i * int64_t(t);
    for (size_t j = 0; j < t; ++j) {
      const bool real = j < p.input_ids.size();
      ids[j] = real ? p.input_ids[j] : tokenizer_.pad_id();
      labels[j] = real ? p.labels[j] : kIgnoreIndex;
      mask[j] = real ? 1 : 0;
    }
  }
  return mb;
}

std::vector<EpisodeKey> MicroBatchKeys(const SamplerState& start, uint64_t global_batch, uint64_t micro_batch,
                                       int dp_rank, int dp_size, uint64_t per_epoch, uint64_t k) {
  const uint64_t per_rank = global_batch / static_cast<uint64_t>(std::max(dp_size, 1));
  if (micro_batch == 0 || per_rank % micro_batch != 0) {
    throw ConfigError("micro batch " + std::to_string(micro_batch) + " does not divide the " +
                      std::to_string(per_rank) + " episodes per DP rank per step (global batch " +
                      std::to_string(global_batch) + ", dp " + std::to_string(dp_size) + ")");
  }
  const uint64_t per_step = per_rank / micro_batch;
  SamplerState state = start;
  const EpisodeKey first = KeyAt(start, (k / per_step) * global_batch, per_epoch);
  state = {first.epoch, first.index};
  std::vector<EpisodeKey> slice = RankSlice(state, global_batch, dp_rank, dp_size, per_epoch);
  const size_t from = static_cast<size_t>((k % per_step) * micro_batch);
  return {slice.begin() + long(from), slice.begin() + long(from + micro_batch)};
}

}  // namespace lcl::sampler
