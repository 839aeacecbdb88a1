// The frozen CLIP ViT vision tower (OpenAI CLIP / HF CLIPVisionModel): patch convolution, class token, learned
// position embeddings, pre-LayerNorm, pre-LN encoder layers with quick-GELU MLPs. Returns the hidden states of
// the configured layer (default second-to-last) with the class token dropped. Frozen: parameters never require
// grad and forward runs under NoGradGuard. An image's features never depend on the batch it came in (it runs in
// fixed-size chunks of images; the feature cache relies on it and feature_cache_test checks it bitwise). Replicated on
// every TP rank. Parameter names are HF names
// ("vision_model.encoder.layers.0.self_attn.q_proj.weight").
//
//   ClipVisionModel tower(config.vision, /*layers_used=*/config.VisionLayersUsed());
//   torch::Tensor features = tower(pixels);  // [N, 3, H, W] -> [N, P, Cv], P = (H / patch)^2
#pragma once

#include <torch/torch.h>

#include <vector>

#include "model/model_config.h"

namespace lcl::model {

class ClipEncoderLayerImpl : public torch::nn::Module {
 public:
  explicit ClipEncoderLayerImpl(const ClipVisionConfig& config);
  torch::Tensor forward(const torch::Tensor& x);  // [N, L, Cv] -> [N, L, Cv]

 private:
  int64_t heads_;
  torch::nn::LayerNorm layer_norm1_{nullptr}, layer_norm2_{nullptr};
  torch::nn::Linear q_proj_{nullptr}, k_proj_{nullptr}, v_proj_{nullptr}, out_proj_{nullptr};
  torch::nn::Linear fc1_{nullptr}, fc2_{nullptr};
};
TORCH_MODULE(ClipEncoderLayer);

class ClipVisionModelImpl : public torch::nn::Module {
 public:
  // `layers_used`: encoder layers run (HF hidden_states[layers_used] is returned); the rest are kept only so that
  // checkpoints load and export whole.
  ClipVisionModelImpl(const ClipVisionConfig& config, int layers_used);
  torch::Tensor forward(const torch::Tensor& pixel_values);  // [N, 3, H, W] -> [N, P, Cv]
  const ClipVisionConfig& config() const { return config_; }
  int layers_used() const { return layers_used_; }

 private:
  torch::Tensor ForwardChunk(const torch::Tensor& pixel_values);  // one fixed-size chunk of forward()

  ClipVisionConfig config_;
  int layers_used_;
  torch::Tensor class_embedding_;                     // [Cv]
  torch::nn::Conv2d patch_embedding_{nullptr};        // [Cv, 3, p, p], no bias
  torch::nn::Embedding position_embedding_{nullptr};  // [P + 1, Cv]
  torch::nn::LayerNorm pre_layrnorm_{nullptr};        // sic: HF's name
  torch::nn::LayerNorm post_layernorm_{nullptr};      // unused by the features; kept for HF round trips
  std::vector<ClipEncoderLayer> layers_;
};
TORCH_MODULE(ClipVisionModel);

}  // namespace lcl::model
