// The LLaMA decoder (LLaMA / Vicuna): SwiGLU MLP, decoder layer (pre-RMSNorm attention + MLP with residuals),
// the decoder stack and the causal LM head, all tensor-parallel. Submodule names follow Hugging Face's
// LlamaForCausalLM so that named_parameters() are HF tensor names ("model.layers.0.self_attn.q_proj.weight").
//
//   LlamaForCausalLM lm(config.text, tp, /*activation_checkpointing=*/false);
//   torch::Tensor h = lm->Embed(input_ids);                              // [B, T, C]
//   torch::Tensor logits = lm->forward(h, position_ids, attention_mask);  // [B, T, V/tp] (this rank's vocab)
#pragma once

#include <torch/torch.h>

#include <vector>

#include "model/attention.h"
#include "model/model_config.h"
#include "model/rms_norm.h"
#include "model/tp_layers.h"

namespace lcl::model {

// down(silu(gate(x)) * up(x)); gate/up column-parallel [F/tp, C], down row-parallel [C, F/tp].
class LlamaMlpImpl : public torch::nn::Module {
 public:
  LlamaMlpImpl(const LlamaConfig& config, TpGroup tp);
  torch::Tensor forward(const torch::Tensor& x);  // [B, T, C] -> [B, T, C]
  ColumnParallelLinear gate_proj{nullptr}, up_proj{nullptr};
  RowParallelLinear down_proj{nullptr};
};
TORCH_MODULE(LlamaMlp);

class LlamaDecoderLayerImpl : public torch::nn::Module {
 public:
  LlamaDecoderLayerImpl(const LlamaConfig& config, TpGroup tp);
  // x [B, T, C] -> [B, T, C]; mask: dense bool [B, 1, T, S] or segments (attention.h).
  torch::Tensor forward(const torch::Tensor& x, const RotaryTables& rope, const AttentionMask& mask,
                        LayerKvCache* cache = nullptr);
  RmsNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  LlamaAttention self_attn{nullptr};
  LlamaMlp mlp{nullptr};
};
TORCH_MODULE(LlamaDecoderLayer);

// Every layer's KV cache for incremental decoding; `length` tokens are cached.
struct KvCache {
  std::vector<LayerKvCache> layers;
  int64_t length = 0;
};

// HF LlamaModel: embed_tokens, layers, norm.
class LlamaModelImpl : public torch::nn::Module {
 public:
  LlamaModelImpl(const LlamaConfig& config, TpGroup tp, bool activation_checkpointing);
  // inputs_embeds [B, T, C], position_ids [B, T], attention_mask [B, past + T] -> final hidden states [B, T, C].
  // With `segments` (SegmentsOf(attention_mask), no cache) attention runs causally inside each segment and no
  // dense mask is built.
  torch::Tensor forward(const torch::Tensor& inputs_embeds, const torch::Tensor& position_ids,
                        const torch::Tensor& attention_mask, KvCache* cache = nullptr,
                        const torch::Tensor& segments = torch::Tensor());
  VocabParallelEmbedding embed_tokens{nullptr};  // [V/tp, C]
  std::vector<LlamaDecoderLayer> layers;         // registered as "layers.N"
  RmsNorm norm{nullptr};
  bool activation_checkpointing;

 private:
  LlamaConfig config_;
};
TORCH_MODULE(LlamaModel);

// HF LlamaForCausalLM: model + lm_head (vocab-parallel; absent when embeddings are tied).
class LlamaForCausalLMImpl : public torch::nn::Module {
 public:
  LlamaForCausalLMImpl(const LlamaConfig& config, TpGroup tp, bool activation_checkpointing);
  torch::Tensor Embed(const torch::Tensor& input_ids);  // [B, T] -> [B, T, C] (full, on every TP rank)
  // -> this rank's vocabulary slice of the logits [B, T, V/tp].
  torch::Tensor forward(const torch::Tensor& inputs_embeds, const torch::Tensor& position_ids,
                        const torch::Tensor& attention_mask, KvCache* cache = nullptr);
  torch::Tensor LmHead(const torch::Tensor& hidden);  // [B, T, C] -> [B, T, V/tp]
  const LlamaConfig& config() const { return config_; }
  TpGroup tp() const { return tp_; }

  LlamaModel model{nullptr};
  ColumnParallelLinear lm_head{nullptr};  // [V/tp, C], TpSplit::Vocab(); null when tie_word_embeddings

 private:
  LlamaConfig config_;
  TpGroup tp_;
};
TORCH_MODULE(LlamaForCausalLM);

}  // namespace lcl::model
