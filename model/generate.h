// Greedy decoding for evaluation, TP-aware: the prompt (with its images) is run once, filling a KV cache, then
// one token per step; each rank computes its vocabulary slice of the last position's logits and the slices are
// all-gathered ([B, V], small) for the argmax. `use_cache=false` recomputes the whole sequence every step (the
// reference the cache is tested against).
//
//   std::vector<std::vector<int64_t>> out = GreedyGenerate(*model, prompt, {/*max_new_tokens=*/8, /*eos=*/2});
#pragma once

#include <torch/torch.h>

#include <vector>

#include "model/multimodal_model.h"

namespace lcl::model {

struct GenerateOptions {
  int max_new_tokens = 16;
  int64_t eos_token_id = -1;  // stop a row at this token (kept in the output); -1 = never
  bool use_cache = true;
};

// prompt.input_ids [B, T] (left padding with attention_mask for B > 1), prompt.images as in forward. Returns the
// new tokens of each row (up to and including eos).
std::vector<std::vector<int64_t>> GreedyGenerate(MultimodalModelImpl& model, const MultimodalBatch& prompt,
                                                 const GenerateOptions& options);

}  // namespace lcl::model
