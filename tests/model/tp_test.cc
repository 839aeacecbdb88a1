// Tensor parallelism at tp = world size (2 or 4) against tp = 1 computed on every rank from the same weights:
// logits, loss and every gradient equal within fp32 tolerance (with and without activation checkpointing, with the
// LM head on every row or on the loss rows only), the
// vocabulary-parallel loss against torch's cross entropy, TP-sliced import and merged export, TP generation, and
// the divisibility errors.
#include <gtest/gtest.h>
#include <mpi.h>

#include "cluster/errors.h"
#include "cluster/mpi_communicator.h"
#include "tests/model/test_configs.h"
#include "tests/test_util.h"
#include "model/generate.h"
#include "model/hf_io.h"

namespace lcl::model {
namespace {

using testing::TestConfig;

int WorldSize() {
  int n = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}

// A config whose heads, KV heads, vocabulary and MLP width divide by 4.
ModelConfig TpConfig(bool checkpointing) {
  ModelConfig c = TestConfig(/*kv_heads=*/4);
  c.activation_checkpointing = checkpointing;
  return c;
}

// Rank 0 exports `full` into `dir`, a directory every rank sees (a TempDir made on MPI_COMM_WORLD), for all to read.
void ShareCheckpoint(MultimodalModelImpl& full, int rank, const std::string& dir) {
  if (rank == 0) ExportHfCheckpoint(full, dir, /*write=*/true);
  MPI_Barrier(MPI_COMM_WORLD);
}

MultimodalBatch Batch(const ModelConfig& c) {
  torch::manual_seed(40);  // same batch on every rank
  const int64_t im = c.image_token_id;
  torch::Tensor ids = torch::randint(0, 60, {2, 10});
  ids[0].narrow(0, 2, 4).fill_(im);
  ids[1].narrow(0, 5, 4).fill_(im);
  torch::Tensor mask = torch::ones_like(ids);
  mask[1][0] = 0;
  torch::Tensor labels = ids.masked_fill(ids.eq(im), -100);
  return MultimodalBatch{ids, mask, {}, labels, torch::randn({2, 3, 16, 16}), {}, false, {}, {}};
}

class TensorParallel : public ::testing::TestWithParam<bool> {};

TEST_P(TensorParallel, LogitsLossAndEveryGradientMatchTp1) {
  const bool checkpointing = GetParam();
  cluster::MpiCommunicator tp_comm(MPI_COMM_WORLD, "tp");
  TpGroup tp{&tp_comm};
  ModelConfig c = TpConfig(checkpointing);
  torch::manual_seed(41);
  MultimodalModel full(TpConfig(false), TpGroup{});
  {
    torch::NoGradGuard g;
    for (auto& p : full->parameters()) p.add_(torch::randn_like(p) * 0.05);
  }
  const lcl::testing::TempDir dir("tp", MPI_COMM_WORLD);
  ShareCheckpoint(*full, tp.rank(), dir.path());
  MultimodalModel sharded(c, tp);
  LoadHfCheckpoint(*sharded, dir.path());  // each rank reads its slices

  MultimodalBatch batch = Batch(c);
  MultimodalOutput ref = full->forward(batch);
  ref.loss.backward();
  MultimodalOutput out = sharded->forward(batch);
  out.loss.backward();

  const int64_t v = c.text.vocab_size / tp.size();
  EXPECT_EQ(out.logits.size(-1), v);  // never the full vocabulary
  EXPECT_TRUE(torch::allclose(out.logits, ref.logits.narrow(-1, tp.rank() * v, v), 1e-4, 1e-5));
  EXPECT_NEAR(out.loss.item<float>(), ref.loss.item<float>(), 1e-5);
  EXPECT_EQ(out.num_tokens, ref.num_tokens);
  auto ref_params = full->named_parameters();
  auto expect_tp1_gradients = [&](const std::string& what) {
    int checked = 0;
    for (const ParamPlacement& p : TpPlacements(*sharded)) {
      const torch::Tensor& want_full = ref_params[p.name].grad();
      if (!p.param.requires_grad()) {
        EXPECT_FALSE(p.param.grad().defined()) << what << p.name;
        continue;
      }
      ASSERT_TRUE(p.param.grad().defined()) << what << p.name;
      const int dim = p.split.dim;
      torch::Tensor want = dim < 0 ? want_full : want_full.narrow(dim, p.offsets[dim], p.param.size(dim));
      EXPECT_TRUE(torch::allclose(p.param.grad(), want, 1e-4, 1e-6))
          << what << p.name << " max diff " << (p.param.grad() - want).abs().max().item<float>();
      ++checked;
    }
    EXPECT_GT(checked, 20) << what;
  };
  expect_tp1_gradients("");

  // The LM head on the loss rows only (what the trainer runs): the same loss and gradients, and the logits are
  // the labelled rows of the full ones.
  sharded->zero_grad();
  MultimodalBatch rows_only = batch;
  rows_only.logits_for_loss_only = true;
  MultimodalOutput part = sharded->forward(rows_only);
  part.loss.backward();
  EXPECT_NEAR(part.loss.item<float>(), ref.loss.item<float>(), 1e-5);
  EXPECT_EQ(part.num_tokens, ref.num_tokens);
  const int64_t t = batch.input_ids.size(1);
  const torch::Tensor labelled =
      batch.labels.masked_fill(batch.attention_mask.eq(0), -100).narrow(1, 1, t - 1).reshape({-1}).ne(-100);
  const torch::Tensor want_rows =
      ref.logits.narrow(1, 0, t - 1).reshape({-1, ref.logits.size(-1)}).index({labelled}).narrow(-1, tp.rank() * v, v);
  ASSERT_EQ(part.logits.sizes(), want_rows.sizes());
  EXPECT_TRUE(torch::allclose(part.logits, want_rows, 1e-4, 1e-5));
  expect_tp1_gradients("loss rows only: ");

  // Export merges the slices back into exactly the weights that were imported.
  checkpoint::NamedTensors merged = GatherHfTensors(*sharded);
  checkpoint::NamedTensors original = GatherHfTensors(*full);
  ASSERT_EQ(merged.size(), original.size());
  for (size_t i = 0; i < merged.size(); ++i) {
    EXPECT_EQ(merged[i].first, original[i].first);
    EXPECT_TRUE(torch::equal(merged[i].second, original[i].second)) << merged[i].first;
  }
}

INSTANTIATE_TEST_SUITE_P(Checkpointing, TensorParallel, ::testing::Bool());

TEST(TensorParallelLoss, VocabParallelCrossEntropyMatchesFullCrossEntropy) {
  cluster::MpiCommunicator comm(MPI_COMM_WORLD, "tp");
  TpGroup tp{&comm};
  torch::manual_seed(42);
  const int64_t vocab = 8 * tp.size();
  torch::Tensor full = torch::randn({9, vocab}) * 5;
  torch::Tensor targets = torch::randint(0, vocab, {9});
  targets[4] = -100;
  const int64_t v = vocab / tp.size();
  torch::Tensor local = full.narrow(1, tp.rank() * v, v).clone().requires_grad_(true);
  torch::Tensor loss = VocabParallelCrossEntropy(local, targets, tp);
  (loss * torch::arange(1, 10).to(torch::kFloat32)).sum().backward();  // non-uniform upstream gradient
  torch::Tensor ref_in = full.clone().requires_grad_(true);
  torch::Tensor ref = torch::nn::functional::cross_entropy(
      ref_in, targets, torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100).reduction(torch::kNone));
  (ref * torch::arange(1, 10).to(torch::kFloat32)).sum().backward();
  EXPECT_TRUE(torch::allclose(loss, ref, 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(local.grad(), ref_in.grad().narrow(1, tp.rank() * v, v), 1e-5, 1e-6));
}

TEST(TensorParallelGenerate, GreedyTokensMatchTp1) {
  cluster::MpiCommunicator comm(MPI_COMM_WORLD, "tp");
  TpGroup tp{&comm};
  ModelConfig c = TpConfig(false);
  torch::manual_seed(43);
  MultimodalModel full(c, TpGroup{});
  {
    torch::NoGradGuard g;
    for (auto& p : full->parameters()) p.add_(torch::randn_like(p) * 0.3);
  }
  const lcl::testing::TempDir dir("tp_gen", MPI_COMM_WORLD);
  ShareCheckpoint(*full, tp.rank(), dir.path());
  MultimodalModel sharded(c, tp);
  LoadHfCheckpoint(*sharded, dir.path());
  MultimodalBatch prompt = Batch(c);
  prompt.labels = torch::Tensor();
  GenerateOptions options{/*max_new_tokens=*/6, -1, true};
  EXPECT_EQ(GreedyGenerate(*sharded, prompt, options), GreedyGenerate(*full, prompt, options));
}

TEST(TensorParallelConfig, IndivisibleHeadsOrVocabAreConfigErrors) {
  cluster::MpiCommunicator comm(MPI_COMM_WORLD, "tp");
  TpGroup tp{&comm};
  ModelConfig c = TestConfig(/*kv_heads=*/1);  // 1 KV head cannot be split
  EXPECT_THROW({ MultimodalModel m(c, tp); }, ConfigError);
  c = TpConfig(false);
  c.text.vocab_size = 16 * WorldSize() + 1;
  c.image_token_id = 3;
  EXPECT_THROW({ MultimodalModel m(c, tp); }, ConfigError);
}

}  // namespace
}  // namespace lcl::model
