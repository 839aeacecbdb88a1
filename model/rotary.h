// Rotary position embeddings (RoPE) in the Hugging Face LLaMA layout: dimension i is paired with i + D/2
// ("rotate_half"), angle = position * theta^(-2i/D).
//
//   RotaryTables rope = MakeRotaryTables(position_ids, /*head_dim=*/D, /*theta=*/10000.0);  // cos, sin [B, T, D]
//   q = ApplyRotary(q, rope);  // q [B, H, T, D]
#pragma once

#include <torch/torch.h>

namespace lcl::model {

struct RotaryTables {
  torch::Tensor cos;  // [B, T, D]
  torch::Tensor sin;  // [B, T, D]
};

// position_ids [B, T] int64 (padded rows may hold any value).
RotaryTables MakeRotaryTables(const torch::Tensor& position_ids, int64_t head_dim, double theta,
                              torch::ScalarType dtype = torch::kFloat32);

// x [B, H, T, D] -> x * cos + rotate_half(x) * sin, broadcasting the tables over heads.
torch::Tensor ApplyRotary(const torch::Tensor& x, const RotaryTables& rope);

}  // namespace lcl::model
