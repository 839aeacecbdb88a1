// Megatron-style tensor-parallel layers over a TP Communicator: the autograd-aware collectives (copy-to /
// reduce-from / gather-from the TP region), ColumnParallelLinear, RowParallelLinear, VocabParallelEmbedding and a
// vocabulary-parallel cross entropy that never gathers the full logits. A null communicator (or one of size 1)
// means no tensor parallelism: every layer is then a plain layer and no collective is issued.
//
//   ColumnParallelLinear up(tp, /*in=*/C, /*out=*/F, /*bias=*/false);   // weight [F/tp, C]
//   RowParallelLinear down(tp, /*in=*/F, /*out=*/C, /*bias=*/false);    // weight [C, F/tp]
//   torch::Tensor y = down(torch::silu(up(x)));                         // [B, T, C] on every TP rank
//   torch::Tensor loss = VocabParallelCrossEntropy(local_logits, targets, tp);  // [N], 0 where ignored
#pragma once

#include <torch/torch.h>

#include "cluster/communicator.h"

namespace lcl::trainer {

// The TP group a layer belongs to. comm == nullptr: no tensor parallelism.
struct TpGroup {
  cluster::Communicator* comm = nullptr;
  int rank() const { return comm ? comm->rank() : 0; }
  int size() const { return comm ? comm->size() : 1; }
  bool active() const { return comm != nullptr && comm->size() > 1; }
};

// Identity in forward, all-reduce (sum) of the gradient in backward: the input of a column-parallel layer, whose
// gradient is a partial sum on each rank (Megatron's `f`).
torch::Tensor CopyToTpRegion(const torch::Tensor& x, TpGroup tp);
// All-reduce (sum) in forward, identity in backward: the output of a row-parallel layer (Megatron's `g`).
torch::Tensor ReduceFromTpRegion(const torch::Tensor& x, TpGroup tp);
// Concatenates every rank's last-dim shard in forward; backward keeps this rank's slice of the gradient.
torch::Tensor GatherFromTpRegion(const torch::Tensor& x, TpGroup tp);

// y = x W^T (+ b) with W split by output rows: weight [out/tp, in], bias [out/tp]. Output stays split on the last
// dim ([.., out/tp]) so that the next row-parallel layer needs no communication.
class ColumnParallelLinearImpl : public torch::nn::Module {
 public:
  ColumnParallelLinearImpl(TpGroup tp, int64_t in_features, int64_t out_features, bool bias);
  torch::Tensor forward(const torch::Tensor& x);  // [.., in] -> [.., out/tp]
  torch::Tensor weight;                           // [out/tp, in]
  torch::Tensor bias;                             // [out/tp] or undefined
  TpGroup tp;
};
TORCH_MODULE(ColumnParallelLinear);

// y = x W^T (+ b) with W split by input columns: weight [out, in/tp], bias [out] (replicated, added once after
// the reduction). Input is split on the last dim ([.., in/tp]); the output is the all-reduced full [.., out].
class RowParallelLinearImpl : public torch::nn::Module {
 public:
  RowParallelLinearImpl(TpGroup tp, int64_t in_features, int64_t out_features, bool bias);
  torch::Tensor forward(const torch::Tensor& x);  // [.., in/tp] -> [.., out]
  torch::Tensor weight;                           // [out, in/tp]
  torch::Tensor bias;                             // [out] or undefined
  TpGroup tp;
};
TORCH_MODULE(RowParallelLinear);

// Embedding with the vocabulary split by rows: rank r holds ids [r*V/tp, (r+1)*V/tp). Ids outside the local range
// give zero rows locally; the all-reduce fills them in from the owning rank.
class VocabParallelEmbeddingImpl : public torch::nn::Module {
 public:
  VocabParallelEmbeddingImpl(TpGroup tp, int64_t vocab_size, int64_t dim);
  torch::Tensor forward(const torch::Tensor& ids);  // [B, T] int64 -> [B, T, C]
  int64_t vocab_start() const { return vocab_start_; }
  torch::Tensor weight;  // [V/tp, C]
  TpGroup tp;

 private:
  int64_t vocab_start_ = 0;
};
TORCH_MODULE(VocabParallelEmbedding);

// Per-token cross entropy from vocabulary-parallel logits: logits [N, V/tp] (this rank's vocabulary slice),
// targets [N] (global ids; `ignore_index` -> loss 0 and no gradient). Returns [N]. Communicates only [N]-sized
// max / sum / target-logit reductions; the backward is softmax - onehot on the local slice.
torch::Tensor VocabParallelCrossEntropy(const torch::Tensor& logits, const torch::Tensor& targets, TpGroup tp,
                                        int64_t ignore_index = -100);

}  // namespace lcl::trainer
