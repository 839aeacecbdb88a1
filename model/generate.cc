// Greedy generation with a KV cache.
#include "model/generate.h"

#include <limits>

namespace lcl::model {
namespace {

// Last-position logits gathered over TP -> argmax ids [B].
// The image placeholder is never generated: it only marks where patches go.
torch::Tensor NextTokens(const torch::Tensor& local_logits, TpGroup tp, int64_t image_token_id) {
  torch::Tensor last = local_logits.select(1, local_logits.size(1) - 1).contiguous();  // [B, V/tp]
  torch::Tensor full = GatherFromTpRegion(last, tp);                                   // [B, V]
  if (image_token_id >= 0 && image_token_id < full.size(1)) {
    full.select(1, image_token_id).fill_(-std::numeric_limits<float>::infinity());
  }
  return full.argmax(-1);  // [B]
}

}  // namespace

std::vector<std::vector<int64_t>> GreedyGenerate(MultimodalModelImpl& model, const MultimodalBatch& prompt,
                                                 const GenerateOptions& options) {
  torch::NoGradGuard no_grad;
  const int64_t b = prompt.input_ids.size(0);
  torch::Tensor ids = prompt.input_ids;
  torch::Tensor mask = prompt.attention_mask.defined() ? prompt.attention_mask : torch::ones_like(ids);
  torch::Tensor positions = MultimodalModelImpl::PositionIds(mask, ids);
  LlamaForCausalLM& lm = model.language_model;
  KvCache cache;
  torch::Tensor logits = lm->forward(model.Embed(ids, prompt.images), positions, mask,
                                     options.use_cache ? &cache : nullptr);  // [B, T, V/tp]
  std::vector<std::vector<int64_t>> out(b);
  std::vector<bool> done(b, false);
  for (int step = 0; step < options.max_new_tokens; ++step) {
    torch::Tensor next = NextTokens(logits, model.tp(), model.config().image_token_id).unsqueeze(1);  // [B, 1]
    bool all_done = true;
    for (int64_t i = 0; i < b; ++i) {
      if (done[i]) continue;
      out[i].push_back(next[i][0].item<int64_t>());
      done[i] = out[i].back() == options.eos_token_id;
      all_done = all_done && done[i];
    }
    if (all_done || step + 1 == options.max_new_tokens) break;
    torch::Tensor next_pos = positions.select(1, positions.size(1) - 1).unsqueeze(1) + 1;  // [B, 1]
    ids = torch::cat({ids, next}, 1);
    mask = torch::cat({mask, torch::ones_like(next)}, 1);
    positions = torch::cat({positions, next_pos}, 1);
    if (options.use_cache) {
      logits = lm->forward(lm->Embed(next), next_pos, mask, &cache);  // one new position
    } else {
      logits = lm->forward(model.Embed(ids, prompt.images), positions, mask, nullptr);
    }
  }
  return out;
}

}  // namespace lcl::model
