// CLIP ViT vision tower.
#include "model/clip_vision.h"

#include <cmath>

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
  // One image at a time: a matmul's rounding may depend on how many rows it is given (seen on CPU at small widths),
  // and an image's features must not depend on the batch it came in, so that the feature cache (trainer/
  // feature_cache.h) returns bit for bit what a run without it computes. At 257 rows per image the matmuls stay
  // large enough to run at full speed.
  if (pixel_values.size(0) > 1) {
    std::vector<torch::Tensor> each;
    for (int64_t i = 0; i < pixel_values.size(0); ++i) each.push_back(forward(pixel_values.narrow(0, i, 1)));
    return torch::cat(each, 0);
  }
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
