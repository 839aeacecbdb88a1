// Vision-language projector.
#include "model/projector.h"

#include "cluster/errors.h"

namespace lcl::model {

ProjectorImpl::ProjectorImpl(const std::string& type, int64_t vision_dim, int64_t text_dim) {
  if (type == "linear") {
    torch::nn::Linear init(vision_dim, text_dim);  // PyTorch's default Linear initialisation
    weight_ = register_parameter("weight", init->weight.detach().clone());
    bias_ = register_parameter("bias", init->bias.detach().clone());
  } else if (type == "mlp2x_gelu") {
    fc1_ = register_module("0", torch::nn::Linear(vision_dim, text_dim));
    fc2_ = register_module("2", torch::nn::Linear(text_dim, text_dim));
  } else {
    throw ConfigError("projector type '" + type + "' is not supported; use linear or mlp2x_gelu");
  }
}

torch::Tensor ProjectorImpl::forward(const torch::Tensor& features) {
  if (weight_.defined()) return torch::nn::functional::linear(features, weight_, bias_);
  return fc2_(torch::gelu(fc1_(features)));  // exact (erf) GELU, as nn.GELU()
}

}  // namespace lcl::model
