// RMSNorm (LLaMA): y = x / sqrt(mean(x^2) + eps) * weight, computed in fp32 and cast back (as HF LlamaRMSNorm).
//
//   RmsNorm norm(/*dim=*/C, /*eps=*/1e-5);
//   torch::Tensor y = norm(x);  // [B, T, C] -> [B, T, C]
#pragma once

#include <torch/torch.h>

namespace lcl::model {

class RmsNormImpl : public torch::nn::Module {
 public:
  RmsNormImpl(int64_t dim, double eps);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;  // [C], initialised to ones

 private:
  double eps_;
};
TORCH_MODULE(RmsNorm);

}  // namespace lcl::model
