// The vision-language projector: "linear" (LLaVA v1: one Linear) or "mlp2x_gelu" (LLaVA 1.5: Linear, GELU,
// Linear). Replicated on every TP rank. Parameter names follow LLaVA's nn.Linear / nn.Sequential ("weight", or
// "0.weight" and "2.weight").
//
//   Projector proj("mlp2x_gelu", /*vision_dim=*/1024, /*text_dim=*/4096);
//   torch::Tensor tokens = proj(features);  // [N, P, Cv] -> [N, P, C]
#pragma once

#include <torch/torch.h>

#include <string>

namespace lcl::model {

class ProjectorImpl : public torch::nn::Module {
 public:
  ProjectorImpl(const std::string& type, int64_t vision_dim, int64_t text_dim);
  torch::Tensor forward(const torch::Tensor& features);

 private:
  torch::Tensor weight_, bias_;                    // linear: [C, Cv], [C]
  torch::nn::Linear fc1_{nullptr}, fc2_{nullptr};  // mlp2x_gelu: [C, Cv], [C, C]
};
TORCH_MODULE(Projector);

}  // namespace lcl::model
