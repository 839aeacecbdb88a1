// How parameters are placed over TP, as the layers declare it (TpPlacements), at tp = world size (2 or 4): every
// parameter of the multimodal model has the split of its layer's kind, the dim the former name rule gave, the TP=1
// model's shape as its global shape, and offsets rank * local; a custom module built from column- and row-parallel
// layers under names no rule knows gets the right global shapes and offsets at tp = 2 and, loaded by them,
// computes what its TP=1 twin computes.
#include "model/tp_layers.h"

#include <gtest/gtest.h>
#include <mpi.h>

#include <map>
#include <string>
#include <vector>

#include "cluster/mpi_communicator.h"
#include "cluster/process_grid.h"
#include "model/multimodal_model.h"
#include "tests/model/test_configs.h"

namespace lcl::model {
namespace {

using Kind = TpSplit::Kind;
using Shape = std::vector<int64_t>;

// The dim the former rule (Hugging Face name -> dim) gave each kind of parameter today's layers hold: q/k/v and
// gate/up weights 0, o/down weights 1, the embedding and the LM head 0, everything else -1.
const std::map<Kind, int> kNameRuleDim = {
    {Kind::kColumn, 0}, {Kind::kRow, 1}, {Kind::kVocab, 0}, {Kind::kReplicated, -1}};

// The split of every TP-split parameter, found through the model's typed members (the layer kinds), not through
// names: q/k/v and gate/up projections column-parallel, o/down row-parallel (bias replicated), the embedding and an
// untied LM head vocabulary-parallel. Keyed by tensor; every parameter not listed is replicated.
std::map<const void*, TpSplit> SplitsByLayerKind(MultimodalModelImpl& m) {
  std::map<const void*, TpSplit> want;
  auto put = [&want](const torch::Tensor& t, TpSplit split) {
    if (t.defined()) want[t.unsafeGetTensorImpl()] = split;
  };
  LlamaForCausalLMImpl& lm = *m.language_model;
  put(lm.model->embed_tokens->weight, TpSplit::Vocab());
  if (lm.lm_head) put(lm.lm_head->weight, TpSplit::Vocab());
  for (LlamaDecoderLayer& layer : lm.model->layers) {
    for (const ColumnParallelLinear& col : {layer->self_attn->q_proj, layer->self_attn->k_proj,
                                            layer->self_attn->v_proj, layer->mlp->gate_proj, layer->mlp->up_proj}) {
      put(col->weight, TpSplit::Column());
      put(col->bias, TpSplit::Column());
    }
    for (const RowParallelLinear& row : {layer->self_attn->o_proj, layer->mlp->down_proj}) {
      put(row->weight, TpSplit::Row());
      put(row->bias, TpSplit::Replicated());
    }
  }
  return want;
}

class ModelPlacement : public ::testing::TestWithParam<bool> {};

TEST_P(ModelPlacement, EveryParameterHasItsLayerKindsSplitAndTheTp1ShapeAsGlobalShape) {
  const bool tied = GetParam();
  cluster::MpiCommunicator comm(MPI_COMM_WORLD, "tp");
  TpGroup tp{&comm};
  const ModelConfig c = testing::TestConfig(/*kv_heads=*/4, tied);  // heads, vocab and MLP divide by 4
  MultimodalModel full(c, TpGroup{});
  MultimodalModel sharded(c, tp);
  const std::map<const void*, TpSplit> want = SplitsByLayerKind(*sharded);
  auto full_params = full->named_parameters();
  auto local_params = sharded->named_parameters();

  const std::vector<ParamPlacement> placements = TpPlacements(*sharded);
  ASSERT_EQ(placements.size(), local_params.size());
  int split = 0;
  for (size_t i = 0; i < placements.size(); ++i) {
    const ParamPlacement& p = placements[i];
    EXPECT_EQ(p.name, local_params[i].key());  // named_parameters() order
    EXPECT_TRUE(p.param.is_same(local_params[i].value())) << p.name;
    auto it = want.find(p.param.unsafeGetTensorImpl());
    const TpSplit expected = it == want.end() ? TpSplit::Replicated() : it->second;
    EXPECT_EQ(p.split, expected) << p.name << ": " << ToString(p.split) << " vs " << ToString(expected);
    EXPECT_EQ(p.split.dim, kNameRuleDim.at(p.split.kind)) << p.name;
    split += p.split.split();

    EXPECT_EQ(p.global_shape, full_params[p.name].sizes().vec()) << p.name;
    Shape offsets(p.param.dim(), 0);
    if (p.split.split()) offsets[p.split.dim] = tp.rank() * p.param.size(p.split.dim);
    EXPECT_EQ(p.offsets, offsets) << p.name;
  }
  // Per decoder layer q/k/v/o and gate/up/down; the embedding; the LM head unless tied.
  EXPECT_EQ(split, 7 * c.text.num_hidden_layers + 1 + (tied ? 0 : 1));
}

INSTANTIATE_TEST_SUITE_P(TiedAndUntiedLmHead, ModelPlacement, ::testing::Bool());

// A block under names no rule knows: a column-parallel "squeeze" (with bias) feeding a row-parallel "widen" (with
// bias), scaled by a replicated "gain" of a plain module.
class AdapterImpl : public torch::nn::Module {
 public:
  explicit AdapterImpl(TpGroup tp) {
    squeeze = register_module("squeeze", ColumnParallelLinear(tp, /*in=*/6, /*out=*/8, /*bias=*/true));
    widen = register_module("widen", RowParallelLinear(tp, /*in=*/8, /*out=*/6, /*bias=*/true));
    gain = register_parameter("gain", torch::rand({6}) + 0.5);
  }
  torch::Tensor forward(const torch::Tensor& x) { return widen(torch::tanh(squeeze(x))) * gain; }  // [N, 6]
  ColumnParallelLinear squeeze{nullptr};
  RowParallelLinear widen{nullptr};
  torch::Tensor gain;
};
TORCH_MODULE(Adapter);

class AdapterStackImpl : public torch::nn::Module {
 public:
  explicit AdapterStackImpl(TpGroup tp) {
    auto list = register_module("blocks", torch::nn::ModuleList());
    for (int i = 0; i < 2; ++i) {
      blocks.push_back(Adapter(tp));
      list->push_back(blocks.back());
    }
  }
  torch::Tensor forward(torch::Tensor x) {
    for (Adapter& b : blocks) x = x + b(x);
    return x;
  }
  std::vector<Adapter> blocks;
};
TORCH_MODULE(AdapterStack);

TEST(CustomModulePlacement, ColumnAndRowLayersUnderUnknownNamesGetGlobalShapesAndOffsetsAtTp2) {
  cluster::ProcessGrid grid(MPI_COMM_WORLD, /*tp=*/2);  // one TP pair on 2 ranks, two on 4
  cluster::MpiCommunicator comm(grid.tp_comm(), "tp");
  TpGroup tp{&comm};
  ASSERT_EQ(tp.size(), 2);
  const int64_t r = tp.rank();
  torch::manual_seed(7);  // the same full weights on every rank
  AdapterStack full(TpGroup{});
  AdapterStack sharded(tp);

  struct Want {
    TpSplit split;
    Shape global, offsets;
  };
  const std::map<std::string, Want> want = {
      {"squeeze.weight", {TpSplit::Column(), {8, 6}, {4 * r, 0}}},
      {"squeeze.bias", {TpSplit::Column(), {8}, {4 * r}}},
      {"widen.weight", {TpSplit::Row(), {6, 8}, {0, 4 * r}}},
      {"widen.bias", {TpSplit::Replicated(), {6}, {0}}},
      {"gain", {TpSplit::Replicated(), {6}, {0}}},
  };
  const std::vector<ParamPlacement> placements = TpPlacements(*sharded);
  ASSERT_EQ(placements.size(), 2 * want.size());
  for (size_t i = 0; i < placements.size(); ++i) {
    const ParamPlacement& p = placements[i];
    const std::string prefix = "blocks." + std::to_string(i / want.size()) + ".";
    ASSERT_EQ(p.name.rfind(prefix, 0), 0u) << p.name;
    const Want& w = want.at(p.name.substr(prefix.size()));
    EXPECT_EQ(p.split, w.split) << p.name << ": " << ToString(p.split);
    EXPECT_EQ(p.global_shape, w.global) << p.name;
    EXPECT_EQ(p.offsets, w.offsets) << p.name;
  }

  // Loaded by its placements from the TP=1 twin, the sharded stack computes the same output and each rank's
  // gradients are its slices of the full gradients.
  {
    torch::NoGradGuard no_grad;
    auto source = full->named_parameters();
    for (const ParamPlacement& p : placements) {
      torch::Tensor src = source[p.name];
      ASSERT_EQ(src.sizes().vec(), p.global_shape) << p.name;
      if (p.split.split()) src = src.narrow(p.split.dim, p.offsets[p.split.dim], p.param.size(p.split.dim));
      p.param.copy_(src);
    }
  }
  torch::Tensor x = torch::randn({5, 6});
  torch::Tensor want_y = full(x);
  torch::Tensor got_y = sharded(x);
  EXPECT_TRUE(torch::allclose(got_y, want_y, 1e-5, 1e-6)) << (got_y - want_y).abs().max().item<float>();
  want_y.square().sum().backward();
  got_y.square().sum().backward();
  auto full_params = full->named_parameters();
  for (const ParamPlacement& p : placements) {
    torch::Tensor g = full_params[p.name].grad();
    if (p.split.split()) g = g.narrow(p.split.dim, p.offsets[p.split.dim], p.param.size(p.split.dim));
    ASSERT_TRUE(p.param.grad().defined()) << p.name;
    EXPECT_TRUE(torch::allclose(p.param.grad(), g, 1e-5, 1e-6)) << p.name;
  }
}

}  // namespace
}  // namespace lcl::model
