// Activation checkpointing as a custom autograd Function.
#include "model/activation_checkpoint.h"

#include "model/llama.h"

namespace lcl::model {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct CheckpointFn : public torch::autograd::Function<CheckpointFn> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, LlamaDecoderLayerImpl* layer,
                               const torch::Tensor& cos, const torch::Tensor& sin, const AttentionMask& mask) {
    // The module outlives the graph (it owns the parameters the graph updates), so a raw pointer is safe here.
    ctx->saved_data["layer"] = reinterpret_cast<int64_t>(layer);
    ctx->saved_data["cos"] = cos;
    ctx->saved_data["sin"] = sin;
    // Not inputs of the function (either may be undefined, and neither has a gradient).
    ctx->saved_data["mask"] = mask.dense;
    ctx->saved_data["segments"] = mask.segments;
    ctx->save_for_backward({x});
    return layer->forward(x, RotaryTables{cos, sin}, mask, nullptr);  // autograd is off inside forward
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto* layer = reinterpret_cast<LlamaDecoderLayerImpl*>(ctx->saved_data["layer"].toInt());
    RotaryTables rope{ctx->saved_data["cos"].toTensor(), ctx->saved_data["sin"].toTensor()};
    torch::Tensor x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    torch::Tensor out;
    {
      torch::AutoGradMode enable(true);
      const AttentionMask mask{ctx->saved_data["mask"].toTensor(), ctx->saved_data["segments"].toTensor()};
      out = layer->forward(x, rope, mask, nullptr);
    }
    // Accumulates into the layer's parameter .grad and into x.grad.
    torch::autograd::backward({out}, {grads[0]});
    return {x.grad(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor CheckpointedDecoderLayer(LlamaDecoderLayerImpl* layer, const torch::Tensor& x, const RotaryTables& rope,
                                       const AttentionMask& mask) {
  return CheckpointFn::apply(x, layer, rope.cos, rope.sin, mask);
}

}  // namespace lcl::model
