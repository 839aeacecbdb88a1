// Megatron-style tensor-parallel layers over a TP Communicator: the autograd-aware collectives (copy-to /
// reduce-from / gather-from the TP region), ColumnParallelLinear, RowParallelLinear, VocabParallelEmbedding and a
// vocabulary-parallel cross entropy that never gathers the full logits. A null communicator (or one of size 1)
// means no tensor parallelism: every layer is then a plain layer and no collective is issued.
//
//   ColumnParallelLinear up(tp, /*in=*/C, /*out=*/F, /*bias=*/false);   // weight [F/tp, C]
//   RowParallelLinear down(tp, /*in=*/F, /*out=*/C, /*bias=*/false);    // weight [C, F/tp]
//   torch::Tensor y = down(torch::silu(up(x)));                         // [B, T, C] on every TP rank
//   torch::Tensor loss = VocabParallelCrossEntropy(local_logits, targets, tp);  // [N], 0 where ignored
//
// Each TP layer declares how each of its parameters is split over the TP group when it registers it (Megatron's
// `tensor_model_parallel` / `partition_dim`); every parameter of any other module is replicated. Importers,
// exporters, checkpoint shards and the optimizer read that declaration, never the parameter's name:
//
//   for (const ParamPlacement& p : TpPlacements(*model)) {  // named_parameters() order
//     // p.split.dim (-1: replicated), p.global_shape, p.offsets: where p.param sits in the global tensor
//   }
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "cluster/communicator.h"

namespace lcl::model {

// The TP group a layer belongs to. comm == nullptr: no tensor parallelism.
struct TpGroup {
  cluster::Communicator* comm = nullptr;
  int rank() const { return comm ? comm->rank() : 0; }
  int size() const { return comm ? comm->size() : 1; }
  bool active() const { return comm != nullptr && comm->size() > 1; }
};

// How one parameter is laid out over the TP group: replicated (every rank holds the whole tensor) or split into
// equal slices along `dim`, rank r holding slice r. The kind says which layer split it, for errors and tests.
struct TpSplit {
  enum class Kind {
    kReplicated,  // dim -1: norms, the vision tower, the projector, a row-parallel bias
    kColumn,      // dim 0: output features of a column-parallel weight and its bias
    kRow,         // dim 1: input features of a row-parallel weight
    kVocab,       // dim 0: the vocabulary rows of the embedding and the LM head
  };
  Kind kind = Kind::kReplicated;
  int dim = -1;

  static TpSplit Replicated() { return {Kind::kReplicated, -1}; }
  static TpSplit Column() { return {Kind::kColumn, 0}; }
  static TpSplit Row() { return {Kind::kRow, 1}; }
  static TpSplit Vocab() { return {Kind::kVocab, 0}; }
  bool split() const { return kind != Kind::kReplicated; }
  bool operator==(const TpSplit& o) const { return kind == o.kind && dim == o.dim; }
  bool operator!=(const TpSplit& o) const { return !(*this == o); }
};
// "replicated", "column(dim 0)", ...: for messages.
std::string ToString(const TpSplit& split);

// The base of every TP layer: registers parameters together with their split, so a new layer cannot fall back to
// "replicated" by accident (plain register_parameter does not compile inside a TpModule).
class TpModule : public torch::nn::Module {
 public:
  explicit TpModule(TpGroup tp_group) : tp(tp_group) {}
  // The declared split of this module's own parameter `name` (not a child's). CHECK-fails when undeclared.
  TpSplit SplitOf(const std::string& name) const;
  TpGroup tp;

  // Hides Module::register_parameter: a TP layer registers every parameter with RegisterSplitParameter.
  torch::Tensor& register_parameter(std::string, torch::Tensor, bool = true) = delete;

 protected:
  torch::Tensor RegisterSplitParameter(const std::string& name, torch::Tensor tensor, TpSplit split);

 private:
  std::map<std::string, TpSplit> splits_;
};

// Where one parameter's local tensor sits in the global (all-TP-ranks) tensor.
struct ParamPlacement {
  std::string name;     // as named_parameters() names it, e.g. "language_model.model.layers.0.mlp.up_proj.weight"
  torch::Tensor param;  // this rank's local tensor
  TpSplit split;
  std::vector<int64_t> global_shape;  // local shape, times the TP size along split.dim
  std::vector<int64_t> offsets;       // 0 except along split.dim: local size * TP rank
};

// Every parameter of the tree under `root`, in named_parameters() order, with the split its owning TpModule
// declared (replicated for parameters of any other module) and its global shape and offsets in that module's TP
// group.
std::vector<ParamPlacement> TpPlacements(const torch::nn::Module& root);

// Identity in forward, all-reduce (sum) of the gradient in backward: the input of a column-parallel layer, whose
// gradient is a partial sum on each rank (Megatron's `f`).
torch::Tensor CopyToTpRegion(const torch::Tensor& x, TpGroup tp);
// All-reduce (sum) in forward, identity in backward: the output of a row-parallel layer (Megatron's `g`).
torch::Tensor ReduceFromTpRegion(const torch::Tensor& x, TpGroup tp);
// Concatenates every rank's last-dim shard in forward; backward keeps this rank's slice of the gradient.
torch::Tensor GatherFromTpRegion(const torch::Tensor& x, TpGroup tp);

// y = x W^T (+ b) with W split by output rows: weight [out/tp, in], bias [out/tp]. Output stays split on the last
// dim ([.., out/tp]) so that the next row-parallel layer needs no communication.
// Weight and bias are declared TpSplit::Column(); with `vocab_output` (the LM head, whose output features are the
// vocabulary) the weight is declared TpSplit::Vocab() instead: the same dim, named for what it splits.
class ColumnParallelLinearImpl : public TpModule {
 public:
  ColumnParallelLinearImpl(TpGroup tp, int64_t in_features, int64_t out_features, bool bias, bool vocab_output = false);
  torch::Tensor forward(const torch::Tensor& x);  // [.., in] -> [.., out/tp]
  torch::Tensor weight;                           // [out/tp, in]
  torch::Tensor bias;                             // [out/tp] or undefined
};
TORCH_MODULE(ColumnParallelLinear);

// y = x W^T (+ b) with W split by input columns: weight [out, in/tp], bias [out] (replicated, added once after
// the reduction). Input is split on the last dim ([.., in/tp]); the output is the all-reduced full [.., out].
// Weight declared TpSplit::Row(), bias TpSplit::Replicated().
class RowParallelLinearImpl : public TpModule {
 public:
  RowParallelLinearImpl(TpGroup tp, int64_t in_features, int64_t out_features, bool bias);
  torch::Tensor forward(const torch::Tensor& x);  // [.., in/tp] -> [.., out]
  torch::Tensor weight;                           // [out, in/tp]
  torch::Tensor bias;                             // [out] or undefined
};
TORCH_MODULE(RowParallelLinear);

// Embedding with the vocabulary split by rows: rank r holds ids [r*V/tp, (r+1)*V/tp). Ids outside the local range
// give zero rows locally; the all-reduce fills them in from the owning rank. Weight declared TpSplit::Vocab().
class VocabParallelEmbeddingImpl : public TpModule {
 public:
  VocabParallelEmbeddingImpl(TpGroup tp, int64_t vocab_size, int64_t dim);
  torch::Tensor forward(const torch::Tensor& ids);  // [B, T] int64 -> [B, T, C]
  int64_t vocab_start() const { return vocab_start_; }
  torch::Tensor weight;  // [V/tp, C]

 private:
  int64_t vocab_start_ = 0;
};
TORCH_MODULE(VocabParallelEmbedding);

// Per-token cross entropy from vocabulary-parallel logits: logits [N, V/tp] (this rank's vocabulary slice),
// targets [N] (global ids; `ignore_index` -> loss 0 and no gradient). Returns [N]. Communicates only [N]-sized
// max / sum / target-logit reductions; the backward is softmax - onehot on the local slice.
torch::Tensor VocabParallelCrossEntropy(const torch::Tensor& logits, const torch::Tensor& targets, TpGroup tp,
                                        int64_t ignore_index = -100);

}  // namespace lcl::model
