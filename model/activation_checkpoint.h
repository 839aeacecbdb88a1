// Activation checkpointing of one decoder layer: forward runs without keeping activations (only the layer input
// is saved); backward recomputes the layer with autograd on and back-propagates through the recomputation
// (PyTorch's reentrant checkpoint). The layer is deterministic (no dropout), so the recomputation is exact; its TP
// collectives are re-issued in backward in the same order on every rank.
//
//   // The same value and gradients as layers[i](h, rope, mask), recomputing the layer in backward:
//   h = CheckpointedDecoderLayer(layers[i].get(), h, rope, mask);
//
// Parameter gradients reach the layer only if `x` requires grad (true whenever anything below is trainable).
#pragma once

#include <torch/torch.h>

#include "model/attention.h"
#include "model/rotary.h"

namespace lcl::model {

class LlamaDecoderLayerImpl;

torch::Tensor CheckpointedDecoderLayer(LlamaDecoderLayerImpl* layer, const torch::Tensor& x, const RotaryTables& rope,
                                       const AttentionMask& mask);

}  // namespace lcl::model
