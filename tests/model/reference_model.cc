// Reference computations for the model tests (see reference_model.h).
#include "tests/model/reference_model.h"

#include <cmath>

namespace lcl::model::testing {
namespace {

torch::Tensor Lin(const Weights& w, const std::string& name, const torch::Tensor& x, bool bias = false) {
  torch::Tensor y = torch::matmul(x, w.at(name + ".weight").t());
  return bias ? y + w.at(name + ".bias") : y;
}

torch::Tensor RefLayerNorm(const torch::Tensor& x, const torch::Tensor& g, const torch::Tensor& b, double eps) {
  torch::Tensor mean = x.mean(-1, true);
  torch::Tensor var = (x - mean).pow(2).mean(-1, true);
  return (x - mean) / torch::sqrt(var + eps) * g + b;
}

}  // namespace

Weights ToMap(const checkpoint::NamedTensors& tensors) {
  Weights w;
  for (const auto& [name, t] : tensors) w[name] = t;
  return w;
}

torch::Tensor RefRmsNorm(const torch::Tensor& x, const torch::Tensor& w, double eps) {
  return x / torch::sqrt(x.pow(2).mean(-1, true) + eps) * w;
}

torch::Tensor RefRope(const torch::Tensor& x, const torch::Tensor& positions, double theta) {
  const int64_t d = x.size(-1), half = d / 2;
  torch::Tensor out = x.clone();
  for (int64_t i = 0; i < half; ++i) {
    const double freq = std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(d));
    torch::Tensor angle = (positions.to(torch::kFloat64) * freq).to(x.scalar_type()).unsqueeze(1);  // [B, 1, T]
    torch::Tensor a = x.select(-1, i), b = x.select(-1, i + half);
    out.select(-1, i).copy_(a * angle.cos() - b * angle.sin());
    out.select(-1, i + half).copy_(a * angle.sin() + b * angle.cos());
  }
  return out;
}

torch::Tensor RefAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                           const torch::Tensor& valid, bool causal) {
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3), S = k.size(2);
  const int64_t group = H / k.size(1);
  torch::Tensor out = torch::zeros_like(q);
  auto valid_a = valid.to(torch::kInt64);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t t = 0; t < T; ++t) {
        std::vector<int64_t> keys;
        for (int64_t s = 0; s < S; ++s) {
          if (valid_a[b][s].item<int64_t>() != 0 && (!causal || s <= t + (S - T))) keys.push_back(s);
        }
        if (keys.empty()) continue;
        torch::Tensor idx = torch::tensor(keys);
        torch::Tensor ks = k[b][h / group].index_select(0, idx);  // [n, D]
        torch::Tensor vs = v[b][h / group].index_select(0, idx);
        torch::Tensor p = torch::softmax(torch::mv(ks, q[b][h][t]) / std::sqrt(static_cast<double>(D)), 0);
        out[b][h][t].copy_(torch::mv(vs.t(), p));
      }
    }
  }
  return out;
}

torch::Tensor RefLlamaLogits(const Weights& w, const LlamaConfig& c, const torch::Tensor& embeds,
                             const torch::Tensor& mask, const torch::Tensor& positions) {
  const int64_t B = embeds.size(0), T = embeds.size(1), D = c.head_dim();
  auto split = [&](const torch::Tensor& y, int64_t n) { return y.view({B, T, n, D}).permute({0, 2, 1, 3}); };
  torch::Tensor h = embeds;
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    torch::Tensor x = RefRmsNorm(h, w.at(p + "input_layernorm.weight"), c.rms_norm_eps);
    torch::Tensor q = RefRope(split(Lin(w, p + "self_attn.q_proj", x), c.num_attention_heads), positions, c.rope_theta);
    torch::Tensor k = RefRope(split(Lin(w, p + "self_attn.k_proj", x), c.num_key_value_heads), positions, c.rope_theta);
    torch::Tensor v = split(Lin(w, p + "self_attn.v_proj", x), c.num_key_value_heads);
    torch::Tensor a = RefAttention(q, k, v, mask, /*causal=*/true).permute({0, 2, 1, 3}).reshape({B, T, -1});
    h = h + Lin(w, p + "self_attn.o_proj", a);
    x = RefRmsNorm(h, w.at(p + "post_attention_layernorm.weight"), c.rms_norm_eps);
    torch::Tensor gate = Lin(w, p + "mlp.gate_proj", x);
    h = h + Lin(w, p + "mlp.down_proj", gate * torch::sigmoid(gate) * Lin(w, p + "mlp.up_proj", x));
  }
  h = RefRmsNorm(h, w.at("model.norm.weight"), c.rms_norm_eps);
  const std::string head = c.tie_word_embeddings ? "model.embed_tokens" : "lm_head";
  return Lin(w, head, h);
}

torch::Tensor RefClipFeatures(const Weights& w, const ClipVisionConfig& c, int layers_used, const torch::Tensor& pixels,
                              const std::string& prefix) {
  const int64_t N = pixels.size(0), p = c.patch_size, g = c.grid(), C = c.hidden_size, H = c.num_attention_heads;
  // Patches by explicit slicing (row-major over the grid), each flattened [3 * p * p] as the conv weight is.
  std::vector<torch::Tensor> patches;
  for (int64_t r = 0; r < g; ++r) {
    for (int64_t col = 0; col < g; ++col) {
      patches.push_back(pixels.narrow(2, r * p, p).narrow(3, col * p, p).reshape({N, -1}));
    }
  }
  const std::string e = prefix + "embeddings.";
  torch::Tensor x = torch::matmul(torch::stack(patches, 1), w.at(e + "patch_embedding.weight").reshape({C, -1}).t());
  x = torch::cat({w.at(e + "class_embedding").expand({N, 1, C}), x}, 1) + w.at(e + "position_embedding.weight");
  x = RefLayerNorm(x, w.at(prefix + "pre_layrnorm.weight"), w.at(prefix + "pre_layrnorm.bias"), c.layer_norm_eps);
  const int64_t L = x.size(1);
  torch::Tensor all_valid = torch::ones({N, L}, torch::kInt64);
  auto split = [&](const torch::Tensor& y) { return y.view({N, L, H, C / H}).permute({0, 2, 1, 3}); };
  for (int i = 0; i < layers_used; ++i) {
    const std::string l = prefix + "encoder.layers." + std::to_string(i) + ".";
    torch::Tensor y = RefLayerNorm(x, w.at(l + "layer_norm1.weight"), w.at(l + "layer_norm1.bias"), c.layer_norm_eps);
    torch::Tensor a =
        RefAttention(split(Lin(w, l + "self_attn.q_proj", y, true)), split(Lin(w, l + "self_attn.k_proj", y, true)),
                     split(Lin(w, l + "self_attn.v_proj", y, true)), all_valid, false);
    x = x + Lin(w, l + "self_attn.out_proj", a.permute({0, 2, 1, 3}).reshape({N, L, C}), true);
    y = RefLayerNorm(x, w.at(l + "layer_norm2.weight"), w.at(l + "layer_norm2.bias"), c.layer_norm_eps);
    y = Lin(w, l + "mlp.fc1", y, true);
    x = x + Lin(w, l + "mlp.fc2", y / (1 + torch::exp(-1.702 * y)), true);
  }
  return x.narrow(1, 1, L - 1);
}

torch::Tensor RefShiftedLoss(const torch::Tensor& logits, const torch::Tensor& labels) {
  const int64_t T = logits.size(1);
  torch::Tensor l = logits.narrow(1, 0, T - 1).reshape({-1, logits.size(2)});
  torch::Tensor y = labels.narrow(1, 1, T - 1).reshape({-1});
  torch::Tensor total = torch::zeros({}, logits.options());
  int64_t n = 0;
  for (int64_t i = 0; i < y.size(0); ++i) {
    const int64_t target = y[i].item<int64_t>();
    if (target == -100) continue;
    total = total + (torch::logsumexp(l[i], 0) - l[i][target]);
    ++n;
  }
  return total / static_cast<double>(std::max<int64_t>(n, 1));
}

}  // namespace lcl::model::testing
