// LLaMA decoder modules.
#include "model/llama.h"

#include "model/activation_checkpoint.h"

namespace lcl::model {

LlamaMlpImpl::LlamaMlpImpl(const LlamaConfig& c, TpGroup tp) {
  const bool bias = c.mlp_bias;
  gate_proj = register_module("gate_proj", ColumnParallelLinear(tp, c.hidden_size, c.intermediate_size, bias));
  up_proj = register_module("up_proj", ColumnParallelLinear(tp, c.hidden_size, c.intermediate_size, bias));
  down_proj = register_module("down_proj", RowParallelLinear(tp, c.intermediate_size, c.hidden_size, bias));
}

torch::Tensor LlamaMlpImpl::forward(const torch::Tensor& x) {
  return down_proj(torch::silu(gate_proj(x)) * up_proj(x));  // [B, T, F/tp] inside
}

LlamaDecoderLayerImpl::LlamaDecoderLayerImpl(const LlamaConfig& c, TpGroup tp) {
  input_layernorm = register_module("input_layernorm", RmsNorm(c.hidden_size, c.rms_norm_eps));
  self_attn = register_module("self_attn", LlamaAttention(c, tp));
  post_attention_layernorm = register_module("post_attention_layernorm", RmsNorm(c.hidden_size, c.rms_norm_eps));
  mlp = register_module("mlp", LlamaMlp(c, tp));
}

torch::Tensor LlamaDecoderLayerImpl::forward(const torch::Tensor& x, const RotaryTables& rope,
                                             const AttentionMask& mask, LayerKvCache* cache) {
  torch::Tensor h = x + self_attn(input_layernorm(x), rope, mask, cache);
  return h + mlp(post_attention_layernorm(h));
}

LlamaModelImpl::LlamaModelImpl(const LlamaConfig& c, TpGroup tp, bool checkpointing)
    : activation_checkpointing(checkpointing), config_(c) {
  embed_tokens = register_module("embed_tokens", VocabParallelEmbedding(tp, c.vocab_size, c.hidden_size));
  auto list = register_module("layers", torch::nn::ModuleList());
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    layers.push_back(LlamaDecoderLayer(c, tp));
    list->push_back(layers.back());
  }
  norm = register_module("norm", RmsNorm(c.hidden_size, c.rms_norm_eps));
}

torch::Tensor LlamaModelImpl::forward(const torch::Tensor& inputs_embeds, const torch::Tensor& position_ids,
                                      const torch::Tensor& attention_mask, KvCache* cache,
                                      const torch::Tensor& segments) {
  const int64_t past = cache ? cache->length : 0;
  const int64_t t = inputs_embeds.size(1);
  RotaryTables rope =
      MakeRotaryTables(position_ids, config_.head_dim(), config_.rope_theta, inputs_embeds.scalar_type());
  TORCH_CHECK(!(segments.defined() && cache != nullptr), "segments are for training forwards, without a KV cache");
  AttentionMask mask;
  if (segments.defined()) {
    mask.segments = segments;
  } else {
    mask.dense = MakeCausalPaddingMask(attention_mask, t, past);  // [B, 1, T, past + T]
  }
  if (cache != nullptr) cache->layers.resize(layers.size());
  // Checkpointing only pays off when a backward follows; with a KV cache (generation) there is none.
  const bool checkpoint = activation_checkpointing && torch::GradMode::is_enabled() && cache == nullptr;
  torch::Tensor h = inputs_embeds;
  for (size_t i = 0; i < layers.size(); ++i) {
    if (checkpoint) {
      h = CheckpointedDecoderLayer(layers[i].get(), h, rope, mask);
    } else {
      h = layers[i]->forward(h, rope, mask, cache ? &cache->layers[i] : nullptr);
    }
  }
  if (cache != nullptr) cache->length += t;
  return norm(h);
}

LlamaForCausalLMImpl::LlamaForCausalLMImpl(const LlamaConfig& c, TpGroup tp, bool checkpointing) : config_(c), tp_(tp) {
  model = register_module("model", LlamaModel(c, tp, checkpointing));
  if (!c.tie_word_embeddings) {
    lm_head = register_module("lm_head", ColumnParallelLinear(tp, c.hidden_size, c.vocab_size, /*bias=*/false,
                                                              /*vocab_output=*/true));
  }
}

torch::Tensor LlamaForCausalLMImpl::Embed(const torch::Tensor& input_ids) { return model->embed_tokens(input_ids); }

torch::Tensor LlamaForCausalLMImpl::LmHead(const torch::Tensor& hidden) {
  if (lm_head) return lm_head(hidden);
  // Tied: the embedding's vocabulary slice [V/tp, C] is exactly this rank's slice of the LM head.
  return torch::nn::functional::linear(CopyToTpRegion(hidden, tp_), model->embed_tokens->weight);
}

torch::Tensor LlamaForCausalLMImpl::forward(const torch::Tensor& inputs_embeds, const torch::Tensor& position_ids,
                                            const torch::Tensor& attention_mask, KvCache* cache) {
  return LmHead(model->forward(inputs_embeds, position_ids, attention_mask, cache));
}

}  // namespace lcl::model
