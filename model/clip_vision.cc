// CLIP ViT vision tower.
#include "model/clip_vision.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "model/attention.h"

namespace lcl::model {
namespace {

torch::nn::LayerNorm MakeLayerNorm(int64_t dim, double eps) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(eps));
}

torch::nn::Linear MakeLinear(int64_t in, int64_t out) { return torch::nn::Linear(torch::nn::LinearOptions(in, out)); }

}  // namespace

ClipEncoderLayerImpl::ClipEncoderLayerImpl(const ClipVisionConfig& c) : heads_(c.num_attention_heads) {
  auto attn = register_module("self_attn", std::make_shared<torch::nn::Module>());
  q_proj_ = attn->register_module("q_proj", MakeLinear(c.hidden_size, c.hidden_size));
  k_proj_ = attn->register_module("k_proj", MakeLinear(c.hidden_size, c.hidden_size));
  v_proj_ = attn->register_module("v_proj", MakeLinear(c.hidden_size, c.hidden_size));
  out_proj_ = attn->register_module("out_proj", MakeLinear(c.hidden_size, c.hidden_size));
  layer_norm1_ = register_module("layer_norm1", MakeLayerNorm(c.hidden_size, c.layer_norm_eps));
  auto mlp = register_module("mlp", std::make_shared<torch::nn::Module>());
  fc1_ = mlp->register_module("fc1", MakeLinear(c.hidden_size, c.intermediate_size));
  fc2_ = mlp->register_module("fc2", MakeLinear(c.intermediate_size, c.hidden_size));
  layer_norm2_ = register_module("layer_norm2", MakeLayerNorm(c.hidden_size, c.layer_norm_eps));
}

torch::Tensor ClipEncoderLayerImpl::forward(const torch::Tensor& x) {
  const int64_t n = x.size(0), l = x.size(1), c = x.size(2), d = c / heads_;
  auto heads = [&](const torch::Tensor& y) { return y.view({n, l, heads_, d}).transpose(1, 2); };  // [N, h, L, d]
  torch::Tensor h = layer_norm1_(x);
  torch::Tensor attn = ScaledDotProductAttention(heads(q_proj_(h)), heads(k_proj_(h)), heads(v_proj_(h)),
                                                 /*mask=*/torch::Tensor());
  torch::Tensor y = x + out_proj_(attn.transpose(1, 2).reshape({n, l, c}));
  torch::Tensor m = fc1_(layer_norm2_(y));
  m = m * torch::sigmoid(1.702 * m);  // quick-GELU
  return y + fc2_(m);
}

ClipVisionModelImpl::ClipVisionModelImpl(const ClipVisionConfig& c, int layers_used)
    : config_(c), layers_used_(layers_used) {
  auto vm = register_module("vision_model", std::make_shared<torch::nn::Module>());
  auto emb = vm->register_module("embeddings", std::make_shared<torch::nn::Module>());
  class_embedding_ = emb->register_parameter("class_embedding", torch::randn({c.hidden_size}) * 0.02);
  patch_embedding_ = emb->register_module(
      "patch_embedding",
      torch::nn::Conv2d(
          torch::nn::Conv2dOptions(c.num_channels, c.hidden_size, c.patch_size).stride(c.patch_size).bias(false)));
  position_embedding_ =
      emb->register_module("position_embedding", torch::nn::Embedding(c.num_patches() + 1, c.hidden_size));
  pre_layrnorm_ = vm->register_module("pre_layrnorm", MakeLayerNorm(c.hidden_size, c.layer_norm_eps));
  auto encoder = vm->register_module("encoder", std::make_shared<torch::nn::Module>());
  auto list = encoder->register_module("layers", torch::nn::ModuleList());
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    layers_.push_back(ClipEncoderLayer(c));
    list->push_back(layers_.back());
  }
  post_layernorm_ = vm->register_module("post_layernorm", MakeLayerNorm(c.hidden_size, c.layer_norm_eps));
  for (auto& p : parameters()) p.set_requires_grad(false);  // frozen: no grads, no optimizer state
}

torch::Tensor ClipVisionModelImpl::forward(const torch::Tensor& pixel_values) {
  torch::NoGradGuard no_grad;
  // An image's features must not depend on the batch it came in: the feature cache (trainer/feature_cache.h)
  // returns bit for bit what a run without it computes, from batches of other sizes. A GEMM's rounding depends on
  // its row count (CPU BLAS picks kernels and K-splits by shape: [10, 256] x [256, 64] and [15, 256] x [256, 64]
  // round differently), not on which rows it holds. So the tower always runs on chunks of the same number of
  // images, the last one padded with zero images: every matmul of every chunk has the same shape, and each op is
  // per row or per image. A chunk is one image once an image has kRowsPerCall rows (ViT-L: 257), and several
  // at tiny widths, where one image at a time would cost ~7x the batched forward in per-op overhead.
  constexpr int64_t kRowsPerCall = 128;
  const int64_t n = pixel_values.size(0);
  const int64_t per_call = std::max<int64_t>(1, kRowsPerCall / (config_.num_patches() + 1));
  std::vector<torch::Tensor> out;
  for (int64_t at = 0; at < n; at += per_call) {
    const int64_t k = std::min(per_call, n - at);
    torch::Tensor chunk = pixel_values.narrow(0, at, k);
    if (k < per_call) {
      std::vector<int64_t> pad_shape = chunk.sizes().vec();
      pad_shape[0] = per_call - k;
      chunk = torch::cat({chunk, torch::zeros(pad_shape, chunk.options())});
    }
    out.push_back(ForwardChunk(chunk).narrow(0, 0, k));
  }
  return out.size() == 1 ? out[0] : torch::cat(out, 0);
}

torch::Tensor ClipVisionModelImpl::ForwardChunk(const torch::Tensor& pixel_values) {
  const int64_t n = pixel_values.size(0);
  torch::Tensor patches = patch_embedding_(pixel_values.to(class_embedding_.scalar_type()));  // [N, Cv, g, g]
  patches = patches.flatten(2).transpose(1, 2);                                               // [N, P, Cv]
  torch::Tensor cls = class_embedding_.view({1, 1, -1}).expand({n, 1, -1});
  torch::Tensor h = torch::cat({cls, patches}, 1) + position_embedding_->weight.unsqueeze(0);  // [N, P+1, Cv]
  h = pre_layrnorm_(h);                                                                        // HF hidden_states[0]
  for (int i = 0; i < layers_used_; ++i) h = layers_[i]->forward(h);
  return h.narrow(1, 1, h.size(1) - 1);  // drop the class token: [N, P, Cv]
}

}  // namespace lcl::model
