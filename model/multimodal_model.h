// The LLaVA-style multimodal model: frozen CLIP tower -> projector -> LLaMA decoder. Token ids carry one
// placeholder (config.image_token_id) per image patch; the projected patches of the batch's images replace the
// placeholder embeddings in order of appearance. Loss covers labelled positions only (HF shift: logits at t
// predict labels at t + 1; -100 = no loss).
//
//   MultimodalModel model(config, tp);
//   MultimodalOutput out = model->forward(batch);  // out.loss: mean over labelled tokens; out.logits [B, T, V/tp]
//   out.loss.backward();
#pragma once

#include <torch/torch.h>

#include "model/clip_vision.h"
#include "model/llama.h"
#include "model/model_config.h"
#include "model/projector.h"
#include "model/tp_layers.h"

namespace lcl::model {

struct MultimodalBatch {
  torch::Tensor input_ids;       // [B, T] int64, image placeholders = config.image_token_id
  torch::Tensor attention_mask;  // [B, T] 1 = real, 0 = padding (packed: episode 1, 2, ...); undefined = all real
  torch::Tensor position_ids;    // [B, T]; undefined = cumsum(attention_mask) - 1 (works for left padding)
  torch::Tensor labels;          // [B, T] int64, -100 = no loss; undefined = no loss computed
  torch::Tensor images;          // [N, 3, H, W], one per image span in order of appearance; may be undefined
  // Optional instead of `images`: the frozen tower's output for them, [N, P, Cv] (trainer/feature_cache.h), so the
  // tower does not run. Exactly what vision_tower(images) returns, so the step is the same.
  torch::Tensor image_features;
  // With labels: run the LM head only on the positions that enter the loss (the same loss and gradients; at 16
  // shots with the loss on the final answer that is a few dozen rows instead of ~10k x the vocabulary). `logits`
  // is then [num_tokens, V/tp], those rows in order.
  bool logits_for_loss_only = false;
  // Optional, with logits_for_loss_only: LossRows(labels, attention_mask), computed where the labels already are
  // on the host (the trainer), so that the device does not have to be asked for the row count.
  torch::Tensor loss_rows;
  // Optional, host int64 [S, 3]: model::SegmentsOf(attention_mask) (the trainer sets it). Attention then runs
  // causally inside each row's real tokens (each episode of a packed row) with no dense [B, 1, T, T] mask: the same
  // result on every real position, less memory, and the causal blocks skipped.
  torch::Tensor segments;
};

struct MultimodalOutput {
  torch::Tensor logits;    // [B, T, V/tp]: this rank's vocabulary slice (see logits_for_loss_only)
  torch::Tensor loss;      // scalar: loss_sum / max(num_tokens, 1); undefined without labels
  torch::Tensor loss_sum;  // scalar: summed token losses (for gradient accumulation weighted by tokens)
  int64_t num_tokens = 0;  // labelled tokens that entered the loss
};

class MultimodalModelImpl : public torch::nn::Module {
 public:
  MultimodalModelImpl(const ModelConfig& config, TpGroup tp);
  MultimodalOutput forward(const MultimodalBatch& batch);
  // The flat indices into [B * (T - 1)] of the shifted targets that enter the loss (labels != -100 on real tokens).
  static torch::Tensor LossRows(const torch::Tensor& labels, const torch::Tensor& attention_mask);
  // Token embeddings with projected image patches written into the placeholder positions: [B, T, C]. The patches
  // come from `image_features` [N, P, Cv] when defined, else from the tower run on `images` [N, 3, H, W].
  torch::Tensor Embed(const torch::Tensor& input_ids, const torch::Tensor& images,
                      const torch::Tensor& image_features = torch::Tensor());
  // Default position ids from an attention mask [B, T] (or all-ones when undefined).
  static torch::Tensor PositionIds(const torch::Tensor& attention_mask, const torch::Tensor& input_ids);

  const ModelConfig& config() const { return config_; }
  TpGroup tp() const { return tp_; }

  LlamaForCausalLM language_model{nullptr};
  ClipVisionModel vision_tower{nullptr};
  Projector mm_projector{nullptr};

 private:
  ModelConfig config_;
  TpGroup tp_;
};
TORCH_MODULE(MultimodalModel);

}  // namespace lcl::model
