// Straightforward reference computations for the model tests, written independently of trainer/: plain tensor
// ops on a name -> tensor map with Hugging Face names, explicit loops over heads and positions, no TP.
//
//   Weights w = ToMap(GatherHfTensors(*model));
//   torch::Tensor logits = RefLlamaLogits(w, config.text, embeds, mask, positions);  // [B, T, V]
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>

#include "model/model_config.h"
#include "checkpoint/safetensors.h"

namespace lcl::model::testing {

using Weights = std::map<std::string, torch::Tensor>;
Weights ToMap(const checkpoint::NamedTensors& tensors);

torch::Tensor RefRmsNorm(const torch::Tensor& x, const torch::Tensor& w, double eps);
// x [B, H, T, D]: dims i and i + D/2 rotated by position * theta^(-2i/D), element by element.
torch::Tensor RefRope(const torch::Tensor& x, const torch::Tensor& positions, double theta);
// q [B, H, T, D], k/v [B, Hkv, S, D]; query t sees key s iff valid[b][s] and (!causal or s <= t); query head h
// uses KV head h / (H / Hkv). Rows with no visible key are left zero.
torch::Tensor RefAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                           const torch::Tensor& valid, bool causal);
// Full-vocabulary logits [B, T, V] of the LLaMA decoder on input embeddings [B, T, C].
torch::Tensor RefLlamaLogits(const Weights& w, const LlamaConfig& c, const torch::Tensor& embeds,
                             const torch::Tensor& mask, const torch::Tensor& positions);
// CLIP features [N, P, Cv] from hidden_states[layers_used], class token dropped; `prefix` = "vision_model." or
// the LLaVA prefix.
torch::Tensor RefClipFeatures(const Weights& w, const ClipVisionConfig& c, int layers_used, const torch::Tensor& pixels,
                              const std::string& prefix);
// Mean cross entropy of logits[:, t] against labels[:, t + 1] over labels != -100, via log-sum-exp.
torch::Tensor RefShiftedLoss(const torch::Tensor& logits, const torch::Tensor& labels);

}  // namespace lcl::model::testing
