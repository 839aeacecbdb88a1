// Attention core, masks and LLaMA self-attention.
#include "model/attention.h"

#include <torch/version.h>

#include <cmath>
#include <limits>
#include <vector>

namespace lcl::model {

torch::Tensor MakeCausalPaddingMask(const torch::Tensor& attention_mask, int64_t q_len, int64_t past_len) {
  const int64_t s = past_len + q_len;
  TORCH_CHECK(attention_mask.dim() == 2 && attention_mask.size(1) == s, "attention_mask must be [B, ", s, "], got ",
              attention_mask.sizes());
  auto opts = torch::TensorOptions().dtype(torch::kInt64).device(attention_mask.device());
  torch::Tensor q_pos = torch::arange(past_len, s, opts).unsqueeze(1);  // [T, 1]
  torch::Tensor k_pos = torch::arange(0, s, opts).unsqueeze(0);         // [1, S]
  torch::Tensor causal = k_pos.le(q_pos);                               // [T, S]
  torch::Tensor keys = attention_mask.ne(0).unsqueeze(1).unsqueeze(1);  // [B, 1, 1, S]
  torch::Tensor allowed = causal & keys;                                // [B, 1, T, S]
  // Packed rows (sampler/packing.h) number their episodes 1, 2, ...: a real query sees its own episode only. With
  // 0/1 masks this changes nothing (every real key is in segment 1), and a padded query keeps what it saw.
  torch::Tensor seg_q = attention_mask.narrow(1, past_len, q_len).unsqueeze(1).unsqueeze(-1);  // [B, 1, T, 1]
  torch::Tensor seg_k = attention_mask.unsqueeze(1).unsqueeze(1);                              // [B, 1, 1, S]
  return (allowed & (seg_k.eq(seg_q) | seg_q.eq(0))) | k_pos.eq(q_pos);
}

torch::Tensor ScaledDotProductAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                        const torch::Tensor& mask, bool force_explicit) {
  if (!force_explicit) {
    return at::scaled_dot_product_attention(
        q, k, v, mask.defined() ? c10::optional<at::Tensor>(mask) : c10::optional<at::Tensor>(),
        /*dropout_p=*/0.0, /*is_causal=*/false);
  }
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  torch::Tensor scores = torch::matmul(q, k.transpose(-2, -1)) * scale;  // [B, H, T, S]
  if (mask.defined()) scores = scores.masked_fill(mask.logical_not(), -std::numeric_limits<float>::infinity());
  torch::Tensor probs = torch::softmax(scores.to(torch::kFloat32), -1).to(q.scalar_type());
  return torch::matmul(probs, v);  // [B, H, T, D]
}

torch::Tensor SegmentsOf(const torch::Tensor& attention_mask) {
  TORCH_CHECK(attention_mask.dim() == 2 && attention_mask.device().is_cpu(),
              "SegmentsOf takes a host [B, T] mask, got ", attention_mask.sizes(), " on ", attention_mask.device());
  const torch::Tensor m = attention_mask.to(torch::kInt64).contiguous();
  const int64_t b = m.size(0), t = m.size(1);
  const int64_t* p = m.data_ptr<int64_t>();
  std::vector<int64_t> out;
  for (int64_t r = 0; r < b; ++r) {
    const int64_t* row = p + r * t;
    for (int64_t j = 0; j < t;) {
      if (row[j] == 0) {
        ++j;
        continue;
      }
      const int64_t start = j, value = row[j];
      while (j < t && row[j] == value) ++j;
      out.insert(out.end(), {r, start, j - start});
    }
  }
  return torch::tensor(out, torch::kInt64).view({-1, 3});
}

torch::Tensor SegmentedCausalAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                       const torch::Tensor& segments) {
  const int64_t b = q.size(0), h = q.size(1), t = q.size(2), d = q.size(3);
  TORCH_CHECK(k.size(2) == t && v.size(2) == t, "SegmentedCausalAttention: keys ", k.sizes(), " for queries ",
              q.sizes());
  const torch::Tensor seg = segments.contiguous();
  const int64_t* s = seg.data_ptr<int64_t>();
  std::vector<std::vector<torch::Tensor>> pieces(static_cast<size_t>(b));
  std::vector<int64_t> filled(static_cast<size_t>(b), 0);
  auto gap = [&](int64_t n) { return torch::zeros({1, h, n, d}, q.options()); };
  for (int64_t i = 0; i < seg.size(0); ++i) {
    const int64_t r = s[3 * i], start = s[3 * i + 1], len = s[3 * i + 2];
    TORCH_CHECK(r >= 0 && r < b && start >= filled[size_t(r)] && len > 0 && start + len <= t,
                "SegmentedCausalAttention: segment (", r, ", ", start, ", ", len, ") out of order or outside [", b,
                ", ", t, "]");
    auto& row = pieces[size_t(r)];
    if (start > filled[size_t(r)]) row.push_back(gap(start - filled[size_t(r)]));
    auto part = [&](const torch::Tensor& x) { return x.narrow(0, r, 1).narrow(2, start, len); };
    row.push_back(at::scaled_dot_product_attention(part(q), part(k), part(v), c10::nullopt, /*dropout_p=*/0.0,
                                                   /*is_causal=*/true));
    filled[size_t(r)] = start + len;
  }
  std::vector<torch::Tensor> rows;
  for (int64_t r = 0; r < b; ++r) {
    auto& row = pieces[size_t(r)];
    if (filled[size_t(r)] < t) row.push_back(gap(t - filled[size_t(r)]));
    rows.push_back(row.size() == 1 ? row[0] : torch::cat(row, 2));
  }
  return rows.size() == 1 ? rows[0] : torch::cat(rows, 0);
}

LlamaAttentionImpl::LlamaAttentionImpl(const LlamaConfig& c, TpGroup tp)
    : local_heads_(c.num_attention_heads / tp.size()),
      local_kv_heads_(c.num_key_value_heads / tp.size()),
      head_dim_(c.head_dim()) {
  const int64_t d = c.head_dim();
  const bool bias = c.attention_bias;
  q_proj = register_module("q_proj", ColumnParallelLinear(tp, c.hidden_size, c.num_attention_heads * d, bias));
  k_proj = register_module("k_proj", ColumnParallelLinear(tp, c.hidden_size, c.num_key_value_heads * d, bias));
  v_proj = register_module("v_proj", ColumnParallelLinear(tp, c.hidden_size, c.num_key_value_heads * d, bias));
  o_proj = register_module("o_proj", RowParallelLinear(tp, c.num_attention_heads * d, c.hidden_size, bias));
}

torch::Tensor LlamaAttentionImpl::forward(const torch::Tensor& x, const RotaryTables& rope, const AttentionMask& mask,
                                          LayerKvCache* cache) {
  const int64_t b = x.size(0), t = x.size(1);
  auto heads = [&](const torch::Tensor& y, int64_t n) {  // [B, T, n*D] -> [B, n, T, D]
    return y.view({b, t, n, head_dim_}).transpose(1, 2);
  };
  torch::Tensor q = ApplyRotary(heads(q_proj(x), local_heads_), rope);
  torch::Tensor k = ApplyRotary(heads(k_proj(x), local_kv_heads_), rope);
  torch::Tensor v = heads(v_proj(x), local_kv_heads_);
  if (cache != nullptr) {
    if (cache->k.defined()) {
      k = torch::cat({cache->k, k}, 2);
      v = torch::cat({cache->v, v}, 2);
    }
    cache->k = k;
    cache->v = v;
  }
  // Grouped-query attention: query head h reads KV head h / (H / Hkv), matching HF's repeat_kv.
  const int64_t groups = local_heads_ / local_kv_heads_;
  if (groups > 1) {
    k = k.repeat_interleave(groups, 1);
    v = v.repeat_interleave(groups, 1);
  }
  TORCH_CHECK(!(mask.segments.defined() && cache != nullptr), "segment attention has no KV cache path");
  torch::Tensor y = mask.segments.defined() ? SegmentedCausalAttention(q, k, v, mask.segments)
                                            : ScaledDotProductAttention(q, k, v, mask.dense);  // [B, H/tp, T, D]
  return o_proj(y.transpose(1, 2).reshape({b, t, local_heads_ * head_dim_}));
}

}  // namespace lcl::model
