// Rotary position embeddings.
#include "model/rotary.h"

namespace lcl::model {

RotaryTables MakeRotaryTables(const torch::Tensor& position_ids, int64_t head_dim, double theta,
                              torch::ScalarType dtype) {
  auto f32 = torch::TensorOptions().dtype(torch::kFloat32).device(position_ids.device());
  // inv_freq[i] = theta^(-2i/D), i in [0, D/2); computed in fp32 like HF.
  torch::Tensor inv_freq = torch::pow(theta, -torch::arange(0, head_dim, 2, f32) / static_cast<double>(head_dim));
  torch::Tensor angles = position_ids.to(torch::kFloat32).unsqueeze(-1) * inv_freq;  // [B, T, D/2]
  torch::Tensor emb = torch::cat({angles, angles}, -1);                              // [B, T, D]
  return RotaryTables{emb.cos().to(dtype), emb.sin().to(dtype)};
}

torch::Tensor ApplyRotary(const torch::Tensor& x, const RotaryTables& rope) {
  const int64_t half = x.size(-1) / 2;
  torch::Tensor rotated = torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * rope.cos.unsqueeze(1) + rotated * rope.sin.unsqueeze(1);
}

}  // namespace lcl::model
