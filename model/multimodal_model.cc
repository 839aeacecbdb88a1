// Multimodal forward: embeddings with image patches, decoder, loss.
#include "model/multimodal_model.h"

#include <algorithm>

#include "checkpoint/safetensors.h"
#include "cluster/errors.h"

namespace lcl::model {

MultimodalModelImpl::MultimodalModelImpl(const ModelConfig& config, TpGroup tp) : config_(config), tp_(tp) {
  config.Validate(tp.size());
  language_model =
      register_module("language_model", LlamaForCausalLM(config.text, tp, config.activation_checkpointing));
  vision_tower = register_module("vision_tower", ClipVisionModel(config.vision, config.VisionLayersUsed()));
  mm_projector = register_module("mm_projector",
                                 Projector(config.projector_type, config.vision.hidden_size, config.text.hidden_size));
}

torch::Tensor MultimodalModelImpl::Embed(const torch::Tensor& input_ids, const torch::Tensor& images,
                                         const torch::Tensor& image_features) {
  torch::Tensor is_image = input_ids.eq(config_.image_token_id);  // [B, T]
  // Placeholder ids may lie outside the vocabulary (LLaVA uses -200): look up a harmless id, then overwrite.
  torch::Tensor embeds = language_model->Embed(input_ids.masked_fill(is_image, 0));  // [B, T, C]
  const int64_t placeholders = is_image.sum().item<int64_t>();
  const bool given = image_features.defined();
  const int64_t n_images = given ? image_features.size(0) : images.defined() ? images.size(0) : 0;
  const int64_t patches = config_.vision.num_patches();
  if (placeholders != n_images * patches) {
    throw DataError("batch has " + std::to_string(placeholders) + " image placeholder tokens (id " +
                    std::to_string(config_.image_token_id) + ") but " + std::to_string(n_images) + " images x " +
                    std::to_string(patches) + " patches = " + std::to_string(n_images * patches) +
                    "; every <image> must expand to exactly " + std::to_string(patches) + " placeholders");
  }
  if (n_images == 0) return embeds;
  const auto& v = config_.vision;
  if (given &&
      (image_features.dim() != 3 || image_features.size(1) != patches || image_features.size(2) != v.hidden_size)) {
    throw DataError("image features have shape " + checkpoint::ShapeString(image_features.sizes()) +
                    "; the vision tower gives [N, " + std::to_string(patches) + ", " + std::to_string(v.hidden_size) +
                    "]");
  }
  if (!given && (images.dim() != 4 || images.size(1) != v.num_channels || images.size(2) != v.image_size ||
                 images.size(3) != v.image_size)) {
    throw DataError("images have shape " + checkpoint::ShapeString(images.sizes()) + "; the vision tower expects [N, " +
                    std::to_string(v.num_channels) + ", " + std::to_string(v.image_size) + ", " +
                    std::to_string(v.image_size) + "]");
  }
  torch::Tensor features = given ? image_features : vision_tower(images);  // [N, P, Cv], no grad
  torch::Tensor tokens = mm_projector(features.to(embeds.scalar_type()));  // [N, P, C]
  return embeds.masked_scatter(is_image.unsqueeze(-1), tokens.reshape({-1, embeds.size(-1)}));
}

torch::Tensor MultimodalModelImpl::PositionIds(const torch::Tensor& attention_mask, const torch::Tensor& input_ids) {
  if (!attention_mask.defined()) {
    return torch::arange(input_ids.size(1), input_ids.options().dtype(torch::kInt64)).unsqueeze(0).expand_as(input_ids);
  }
  return (attention_mask.ne(0).to(torch::kInt64).cumsum(-1) - 1).clamp_min(0);
}

torch::Tensor MultimodalModelImpl::LossRows(const torch::Tensor& labels, const torch::Tensor& attention_mask) {
  torch::Tensor l = attention_mask.defined() ? labels.masked_fill(attention_mask.eq(0), -100) : labels;
  return l.narrow(1, 1, l.size(1) - 1).reshape({-1}).ne(-100).nonzero().squeeze(1);
}

MultimodalOutput MultimodalModelImpl::forward(const MultimodalBatch& batch) {
  const torch::Tensor& ids = batch.input_ids;
  TORCH_CHECK(ids.dim() == 2, "input_ids must be [B, T], got ", ids.sizes());
  torch::Tensor mask = batch.attention_mask.defined() ? batch.attention_mask : torch::ones_like(ids);
  torch::Tensor positions = batch.position_ids.defined() ? batch.position_ids : PositionIds(batch.attention_mask, ids);
  MultimodalOutput out;
  const bool loss_rows_only = batch.logits_for_loss_only && batch.labels.defined();
  torch::Tensor hidden = language_model->model->forward(Embed(ids, batch.images, batch.image_features), positions, mask,
                                                        /*cache=*/nullptr, batch.segments);  // [B, T, C]
  if (!loss_rows_only) out.logits = language_model->LmHead(hidden);                          // [B, T, V/tp]
  if (!batch.labels.defined()) return out;
  // Padding never counts, whatever the labels say.
  torch::Tensor labels = batch.labels.masked_fill(mask.eq(0), -100);
  const int64_t t = ids.size(1);
  torch::Tensor targets = labels.narrow(1, 1, t - 1).reshape({-1});  // position t predicts token t + 1
  torch::Tensor per_token;
  if (loss_rows_only) {
    const torch::Tensor rows = batch.loss_rows.defined() ? batch.loss_rows : LossRows(batch.labels, mask);
    torch::Tensor h = hidden.narrow(1, 0, t - 1).reshape({-1, hidden.size(-1)}).index_select(0, rows);
    out.logits = language_model->LmHead(h);  // [num_tokens, V/tp]
    per_token = VocabParallelCrossEntropy(out.logits, targets.index_select(0, rows), tp_, /*ignore_index=*/-100);
  } else {
    torch::Tensor logits = out.logits.narrow(1, 0, t - 1);
    per_token = VocabParallelCrossEntropy(logits.reshape({-1, logits.size(-1)}), targets, tp_, /*ignore_index=*/-100);
  }
  // In the loss-rows path the count is the row count (no read-back from the device).
  out.num_tokens = loss_rows_only ? per_token.size(0) : targets.ne(-100).sum().item<int64_t>();
  out.loss_sum = per_token.sum();
  out.loss = out.loss_sum / static_cast<double>(std::max<int64_t>(out.num_tokens, 1));
  return out;
}

}  // namespace lcl::model
