// Attention: the masked scaled-dot-product core (SDPA from LibTorch >= 2, an explicit implementation otherwise),
// the causal + padding mask, the KV cache of one layer, and LLaMA's tensor-parallel self-attention (Q/K/V
// column-parallel, output row-parallel, multi-head or grouped-query).
//
//   torch::Tensor mask = MakeCausalPaddingMask(attention_mask, /*q_len=*/T, /*past_len=*/0);  // [B, 1, T, T]
//   LlamaAttention attn(config, tp);
//   torch::Tensor y = attn(x, rope, AttentionMask{mask, {}}, /*cache=*/nullptr);  // [B, T, C]
#pragma once

#include <torch/torch.h>

#include "model/model_config.h"
#include "model/rotary.h"
#include "model/tp_layers.h"

namespace lcl::model {

// attention_mask [B, S] (nonzero = real token, 0 = padding; S = past_len + q_len) -> bool [B, 1, q_len, S], true where
// query i (at absolute position past_len + i) may attend key j: j <= past_len + i and key j is real. A query
// always sees itself, so a padded row never softmaxes over an empty set (its output is ignored anyway).
// A packed row (sampler/packing.h) holds its episodes' numbers 1, 2, ... instead of 1: a real query then attends
// only keys of its own episode (block-diagonal and causal).
torch::Tensor MakeCausalPaddingMask(const torch::Tensor& attention_mask, int64_t q_len, int64_t past_len);

// softmax(q k^T / sqrt(D) masked) v. q [B, H, T, D], k/v [B, H, S, D], mask bool [B, 1, T, S] or undefined
// (no mask). Uses at::scaled_dot_product_attention where LibTorch provides it, unless `force_explicit`.
torch::Tensor ScaledDotProductAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                        const torch::Tensor& mask, bool force_explicit = false);

// The runs of real tokens of each row, for SegmentedCausalAttention: a host int64 [S, 3] of (row, start, length),
// one per run of equal nonzero attention_mask values, in row then position order. A right- or left-padded row has
// one segment, a packed row (sampler/packing.h) one per episode. attention_mask is [B, T] on the host.
torch::Tensor SegmentsOf(const torch::Tensor& attention_mask);

// Causal attention inside each segment alone: q, k, v [B, H, T, D] (keys already repeated for GQA), segments as
// SegmentsOf gives -> [B, H, T, D], zero outside every segment. Each segment is one SDPA call with is_causal and no
// mask, so the fused kernels skip the blocks above the diagonal and no [B, 1, T, T] mask is built: the training
// path's attention, equal to the masked one on every real query (layers_test).
torch::Tensor SegmentedCausalAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                       const torch::Tensor& segments);

// What a layer's queries may attend: `segments` (SegmentsOf; training, no KV cache) when defined, else the dense
// bool mask (MakeCausalPaddingMask).
struct AttentionMask {
  torch::Tensor dense;
  torch::Tensor segments;
};

// Keys and values seen so far by one layer (this rank's KV heads): [B, Hkv/tp, S, D] each.
struct LayerKvCache {
  torch::Tensor k;
  torch::Tensor v;
};

class LlamaAttentionImpl : public torch::nn::Module {
 public:
  LlamaAttentionImpl(const LlamaConfig& config, TpGroup tp);
  // x [B, T, C] -> [B, T, C]. With `cache`, keys/values are appended to it and attention covers the cached prefix.
  torch::Tensor forward(const torch::Tensor& x, const RotaryTables& rope, const AttentionMask& mask,
                        LayerKvCache* cache = nullptr);

  ColumnParallelLinear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr};  // [H*D/tp, C], [Hkv*D/tp, C] x2
  RowParallelLinear o_proj{nullptr};                                       // [C, H*D/tp]

 private:
  int64_t local_heads_, local_kv_heads_, head_dim_;
};
TORCH_MODULE(LlamaAttention);

}  // namespace lcl::model
