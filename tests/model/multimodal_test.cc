// The decoder, the CLIP tower and the full multimodal forward (images in placeholder spans, padding, labels)
// against the reference computations of reference_model.h; greedy generation with a KV cache against full
// recomputation.
#include <gtest/gtest.h>

#include <limits>

#include "cluster/errors.h"
#include "tests/model/reference_model.h"
#include "tests/model/test_configs.h"
#include "model/generate.h"
#include "model/hf_io.h"
#include "model/multimodal_model.h"

namespace lcl::model {
namespace {

using testing::TestConfig;
using testing::Weights;

// Non-trivial norms and biases so that the reference sees every parameter.
void Perturb(MultimodalModelImpl& model) {
  torch::NoGradGuard g;
  for (auto& p : model.parameters()) p.add_(torch::randn_like(p) * 0.05);
}

// Left-padded batch of 2 rows of length 12: row 0 holds one image span, row 1 two (4 placeholders each).
MultimodalBatch MakeBatch(const ModelConfig& c) {
  const int64_t im = c.image_token_id, s = c.im_start_token_id, e = c.im_end_token_id;
  const std::vector<int64_t> tokens = {0, 0,  5,  s,  im, im, im, im, e,  7,  8,  9,  //
                                       s, im, im, im, im, e,  s,  im, im, im, im, e};
  torch::Tensor ids = torch::tensor(tokens).view({2, 12});
  torch::Tensor mask = torch::ones_like(ids);
  mask[0][0] = 0;
  mask[0][1] = 0;
  torch::Tensor labels = torch::full_like(ids, -100);
  labels[0].narrow(0, 9, 3).copy_(ids[0].narrow(0, 9, 3));
  labels[1][11] = e;
  MultimodalBatch batch;
  batch.input_ids = ids;
  batch.attention_mask = mask;
  batch.labels = labels;
  batch.images = torch::randn({3, 3, c.vision.image_size, c.vision.image_size});
  return batch;
}

torch::Tensor RefProjector(const Weights& w, const ModelConfig& c, const torch::Tensor& f) {
  if (c.projector_type == "linear") {
    return torch::matmul(f, w.at("model.mm_projector.weight").t()) + w.at("model.mm_projector.bias");
  }
  torch::Tensor h = torch::matmul(f, w.at("model.mm_projector.0.weight").t()) + w.at("model.mm_projector.0.bias");
  h = 0.5 * h * (1 + torch::erf(h / std::sqrt(2.0)));
  return torch::matmul(h, w.at("model.mm_projector.2.weight").t()) + w.at("model.mm_projector.2.bias");
}

// Reference embeddings: table rows, then the i-th placeholder of the batch (row-major) gets patch i.
torch::Tensor RefEmbeds(const Weights& w, const ModelConfig& c, const MultimodalBatch& batch) {
  torch::Tensor feats = testing::RefClipFeatures(w, c.vision, c.VisionLayersUsed(), batch.images,
                                                 "model.vision_tower.vision_tower.vision_model.");
  torch::Tensor tokens = RefProjector(w, c, feats).reshape({-1, c.text.hidden_size});
  std::vector<torch::Tensor> rows;
  int64_t next = 0;
  for (int64_t b = 0; b < batch.input_ids.size(0); ++b) {
    for (int64_t t = 0; t < batch.input_ids.size(1); ++t) {
      const int64_t id = batch.input_ids[b][t].item<int64_t>();
      rows.push_back(id == c.image_token_id ? tokens[next++] : w.at("model.embed_tokens.weight")[id]);
    }
  }
  return torch::stack(rows).view({batch.input_ids.size(0), batch.input_ids.size(1), -1});
}

TEST(LlamaDecoder, LogitsMatchReferenceForMhaGqaAndTiedEmbeddings) {
  for (auto [kv, tied] : {std::pair{4, false}, std::pair{2, false}, std::pair{1, true}}) {
    torch::manual_seed(10);
    ModelConfig c = TestConfig(kv, tied);
    MultimodalModel model(c, TpGroup{});
    Perturb(*model);
    Weights w = testing::ToMap(GatherHfTensors(*model));
    EXPECT_EQ(w.count("lm_head.weight"), tied ? 0u : 1u);
    torch::Tensor ids = torch::randint(0, 60, {2, 7});
    torch::Tensor mask = torch::ones_like(ids);
    mask[1][0] = 0;  // left padding in row 1
    MultimodalBatch batch{ids, mask, {}, {}, {}, {}, false, {}, {}};
    torch::Tensor logits = model->forward(batch).logits;
    torch::Tensor pos = MultimodalModelImpl::PositionIds(mask, ids);
    torch::Tensor ref = testing::RefLlamaLogits(w, c.text, w.at("model.embed_tokens.weight").index({ids}), mask, pos);
    EXPECT_TRUE(torch::allclose(logits[0], ref[0], 1e-4, 1e-5)) << "kv=" << kv << " tied=" << tied;
    EXPECT_TRUE(torch::allclose(logits[1].narrow(0, 1, 6), ref[1].narrow(0, 1, 6), 1e-4, 1e-5));
  }
}

TEST(ClipVision, FeaturesMatchReferenceAndTowerIsFrozen) {
  torch::manual_seed(11);
  ModelConfig c = TestConfig();
  MultimodalModel model(c, TpGroup{});
  Perturb(*model);
  Weights w = testing::ToMap(GatherHfTensors(*model));
  torch::Tensor pixels = torch::randn({2, 3, 16, 16});
  torch::Tensor feats = model->vision_tower(pixels);
  EXPECT_EQ(feats.sizes(), (std::vector<int64_t>{2, 4, 24}));  // CLS dropped: 4 patches
  EXPECT_FALSE(feats.requires_grad());
  for (const auto& p : model->vision_tower->parameters()) EXPECT_FALSE(p.requires_grad());
  torch::Tensor ref =
      testing::RefClipFeatures(w, c.vision, /*layers_used=*/2, pixels, "model.vision_tower.vision_tower.vision_model.");
  EXPECT_TRUE(torch::allclose(feats, ref, 1e-4, 1e-5));
  // The last layer's output differs: the second-to-last layer really is the one selected.
  torch::Tensor last =
      testing::RefClipFeatures(w, c.vision, 3, pixels, "model.vision_tower.vision_tower.vision_model.");
  EXPECT_FALSE(torch::allclose(feats, last, 1e-3, 1e-3));
}

TEST(MultimodalModel, LossAndProjectorGradientsMatchReferenceForBothProjectors) {
  for (const char* projector : {"mlp2x_gelu", "linear"}) {
    torch::manual_seed(12);
    ModelConfig c = TestConfig(2, false, projector);
    MultimodalModel model(c, TpGroup{});
    Perturb(*model);
    MultimodalBatch batch = MakeBatch(c);
    MultimodalOutput out = model->forward(batch);
    EXPECT_EQ(out.num_tokens, 3 + 1);
    out.loss.backward();

    Weights w = testing::ToMap(GatherHfTensors(*model));
    for (auto& [name, t] : w) t.requires_grad_(name.find("mm_projector") != std::string::npos);
    torch::Tensor mask = batch.attention_mask;
    torch::Tensor ref_logits = testing::RefLlamaLogits(w, c.text, RefEmbeds(w, c, batch), mask,
                                                       MultimodalModelImpl::PositionIds(mask, batch.input_ids));
    torch::Tensor ref_loss = testing::RefShiftedLoss(ref_logits, batch.labels);
    ref_loss.backward();
    EXPECT_NEAR(out.loss.item<float>(), ref_loss.item<float>(), 1e-5) << projector;
    for (const auto& p : model->mm_projector->named_parameters()) {
      torch::Tensor ref_grad = w.at("model.mm_projector." + p.key()).grad();
      ASSERT_TRUE(p.value().grad().defined()) << p.key();
      EXPECT_TRUE(torch::allclose(p.value().grad(), ref_grad, 1e-4, 1e-6)) << projector << " " << p.key();
    }
    for (const auto& p : model->vision_tower->parameters()) EXPECT_FALSE(p.grad().defined());
  }
}

TEST(MultimodalModel, PlaceholderCountMismatchIsDataError) {
  ModelConfig c = TestConfig();
  MultimodalModel model(c, TpGroup{});
  MultimodalBatch batch = MakeBatch(c);
  batch.images = batch.images.narrow(0, 0, 2);  // 3 spans, 2 images
  try {
    model->forward(batch);
    FAIL() << "expected DataError";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("12 image placeholder tokens"), std::string::npos) << e.what();
  }
}

TEST(Generate, KvCacheEqualsFullRecomputation) {
  torch::manual_seed(13);
  ModelConfig c = TestConfig();
  MultimodalModel model(c, TpGroup{});
  Perturb(*model);
  MultimodalBatch prompt = MakeBatch(c);
  prompt.labels = torch::Tensor();
  GenerateOptions cached{/*max_new_tokens=*/10, /*eos_token_id=*/-1, /*use_cache=*/true};
  GenerateOptions full = cached;
  full.use_cache = false;
  auto a = GreedyGenerate(*model, prompt, cached);
  auto b = GreedyGenerate(*model, prompt, full);
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0].size(), 10u);
  EXPECT_EQ(a, b);
  // And the first token is the argmax of the plain forward's last position.
  torch::NoGradGuard g;
  torch::Tensor last = model->forward(prompt).logits[1][11].clone();
  last[c.image_token_id] = -std::numeric_limits<float>::infinity();  // never generated
  EXPECT_EQ(a[1][0], last.argmax().item<int64_t>());
}

}  // namespace
}  // namespace lcl::model
