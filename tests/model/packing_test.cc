// Packing (sampler/packing.h): the rows it makes, and that the model trains on a packed micro-batch exactly as on
// the unpacked one (the same loss sum and gradients), which it does not without the episode-numbered mask.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <random>
#include <tuple>

#include "cluster/errors.h"
#include "model/attention.h"
#include "model/multimodal_model.h"
#include "sampler/packing.h"
#include "tests/model/test_configs.h"

namespace lcl {
namespace {

using model::MultimodalBatch;
using model::MultimodalModel;
using sampler::kIgnoreIndex;
using sampler::MicroBatch;

// Episode e: `images[e]` image spans (im_start, 4 placeholders, im_end) between text tokens, answers labelled at
// the end, as the pipeline builds them (one right-padded row each, images episode-major).
MicroBatch MakeMicroBatch(const model::ModelConfig& c, const std::vector<int>& images, const std::vector<int>& text) {
  std::vector<std::vector<int64_t>> ids(images.size()), labels(images.size());
  for (size_t e = 0; e < images.size(); ++e) {
    for (int i = 0; i < images[e]; ++i) {
      ids[e].push_back(1 + (i + int(e)) % 50);
      ids[e].push_back(c.im_start_token_id);
      for (int p = 0; p < 4; ++p) ids[e].push_back(c.image_token_id);
      ids[e].push_back(c.im_end_token_id);
    }
    for (int i = 0; i < text[e]; ++i) ids[e].push_back(1 + (7 * i + 3 * int(e)) % 60);
    labels[e].assign(ids[e].size(), kIgnoreIndex);
    for (size_t j = ids[e].size() - 3; j < ids[e].size(); ++j) labels[e][j] = ids[e][j];  // the answer
  }
  size_t t = 0;
  for (const auto& row : ids) t = std::max(t, row.size());
  const int64_t b = int64_t(images.size());
  MicroBatch mb;
  mb.input_ids = torch::full({b, int64_t(t)}, 0, torch::kInt64);
  mb.labels = torch::full({b, int64_t(t)}, kIgnoreIndex, torch::kInt64);
  mb.attention_mask = torch::zeros({b, int64_t(t)}, torch::kInt64);
  for (int64_t e = 0; e < b; ++e) {
    const int64_t n = int64_t(ids[size_t(e)].size());
    mb.input_ids[e].narrow(0, 0, n).copy_(torch::tensor(ids[size_t(e)]));
    mb.labels[e].narrow(0, 0, n).copy_(torch::tensor(labels[size_t(e)]));
    mb.attention_mask[e].narrow(0, 0, n).fill_(1);
    mb.keys.push_back({0, uint64_t(e)});
    mb.images_per_episode.push_back(images[size_t(e)]);
    mb.shots.push_back(int(e));
    mb.requested_shots.push_back(int(e) + 10);
    mb.requested_tokens.push_back(int(n));
  }
  const int total = std::accumulate(images.begin(), images.end(), 0);
  mb.images = torch::randn({total, 3, c.vision.image_size, c.vision.image_size});
  return mb;
}

TEST(PackRows, BalancedRowsWithTheFewestPositionsWithinTheBudget) {
  const std::vector<int64_t> lengths = {30, 80, 20, 50, 45, 10};
  const auto rows = sampler::PackRows(lengths, 100);
  // Three rows at least (235 tokens). Longest first to the least-loaded row: 80 -> A, 50 -> B, 45 -> C, 30 -> C,
  // 20 -> B, 10 -> B: rows of 80, 80, 75, so 3 x 80 = 240 positions (first fit gave 3 x 100: 80+20, 50+45,
  // 30+10). Four or more rows cost at least 4 x 80.
  const std::vector<std::vector<int>> want = {{0, 4}, {1}, {2, 3, 5}};
  EXPECT_EQ(rows, want);
  // An episode over the budget gets a row of its own, and the rows then may be as long as it.
  const auto long_one = sampler::PackRows({150, 30, 40}, 100);
  const std::vector<std::vector<int>> want_long = {{0}, {1, 2}};
  EXPECT_EQ(long_one, want_long);
  // First fit would fill a row to the budget and pad the short last one out to it: 4 x 1800 at 5400 gave
  // 5400 + 1800, 10,800 positions for 7,200 tokens; balanced, 3600 + 3600.
  const auto four = sampler::PackRows({1800, 1800, 1800, 1800}, 5400);
  const std::vector<std::vector<int>> want_four = {{0, 2}, {1, 3}};
  EXPECT_EQ(four, want_four);
  EXPECT_TRUE(sampler::PackRows({}, 100).empty());
  EXPECT_THROW(sampler::PackRows(lengths, 0), ConfigError);
  EXPECT_THROW(sampler::PackRows(lengths, -5), ConfigError);
}

// Over many random micro-batches: every episode in exactly one row, no row over the capacity, and never more
// positions (rows x longest row) than one padded row per episode.
TEST(PackRows, NeverMorePositionsThanPaddedAndEveryEpisodeOnce) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 500; ++trial) {
    const int n = 1 + int(rng() % 12);
    std::vector<int64_t> lengths(static_cast<size_t>(n));
    for (int64_t& l : lengths) l = 1 + int64_t(rng() % 400);
    const int64_t budget = 1 + int64_t(rng() % 1200);
    const auto rows = sampler::PackRows(lengths, budget);
    const int64_t longest = *std::max_element(lengths.begin(), lengths.end());
    const int64_t capacity = std::max(budget, longest);
    std::vector<int> seen(static_cast<size_t>(n), 0);
    int64_t width = 0;
    for (const auto& row : rows) {
      ASSERT_FALSE(row.empty());
      int64_t used = 0;
      for (int e : row) {
        ++seen[size_t(e)];
        used += lengths[size_t(e)];
      }
      EXPECT_LE(used, capacity);
      width = std::max(width, used);
    }
    EXPECT_EQ(seen, std::vector<int>(size_t(n), 1)) << "trial " << trial;
    EXPECT_LE(int64_t(rows.size()) * width, int64_t(n) * longest) << "trial " << trial;
  }
}

TEST(PackMicroBatch, RowsHoldTheEpisodesWithRestartingPositionsAndTheirImages) {
  const model::ModelConfig c = model::testing::TestConfig();
  const MicroBatch mb = MakeMicroBatch(c, {3, 1, 2, 0, 4}, {5, 9, 4, 12, 20});  // lengths 26, 16, 18, 12, 48
  const MicroBatch p = sampler::PackMicroBatch(mb, 40);
  // Rows of max(40, 48) tokens, three at least (120 tokens): 48 -> A, 26 -> B, 18 -> C, 16 -> C (34), 12 -> B
  // (38); rows in the order of their first episode.
  ASSERT_EQ(p.input_ids.size(0), 3);
  EXPECT_EQ(p.input_ids.size(1), 48);
  std::vector<uint64_t> order;
  for (const auto& k : p.keys) order.push_back(k.index);
  EXPECT_EQ(order, (std::vector<uint64_t>{0, 3, 1, 2, 4}));
  const std::vector<std::vector<int>> rows = {{0, 3}, {1, 2}, {4}};
  const std::vector<int> first_image = {0, 3, 4, 6, 6};
  int64_t next_image = 0;
  for (size_t r = 0; r < rows.size(); ++r) {
    int64_t at = 0, seg = 0;
    for (int e : rows[r]) {
      const int64_t n = mb.attention_mask[e].sum().item<int64_t>();
      ++seg;
      EXPECT_TRUE(torch::equal(p.input_ids[int64_t(r)].narrow(0, at, n), mb.input_ids[e].narrow(0, 0, n)));
      EXPECT_TRUE(torch::equal(p.position_ids[int64_t(r)].narrow(0, at, n), torch::arange(n)));
      EXPECT_TRUE(p.attention_mask[int64_t(r)].narrow(0, at, n).eq(seg).all().item<bool>());
      EXPECT_EQ(p.labels[int64_t(r)][at].item<int64_t>(), kIgnoreIndex);
      EXPECT_TRUE(torch::equal(p.labels[int64_t(r)].narrow(0, at + 1, n - 1), mb.labels[e].narrow(0, 1, n - 1)));
      const int k = mb.images_per_episode[size_t(e)];
      EXPECT_TRUE(torch::equal(p.images.narrow(0, next_image, k), mb.images.narrow(0, first_image[size_t(e)], k)));
      next_image += k;
      at += n;
    }
    EXPECT_TRUE(p.attention_mask[int64_t(r)].narrow(0, at, 48 - at).eq(0).all().item<bool>()) << "row " << r;
    EXPECT_TRUE(p.labels[int64_t(r)].narrow(0, at, 48 - at).eq(kIgnoreIndex).all().item<bool>());
  }
  EXPECT_EQ(next_image, mb.images.size(0));
  EXPECT_EQ(p.images_per_episode, (std::vector<int>{3, 0, 1, 2, 4}));
  EXPECT_EQ(p.requested_shots, (std::vector<int>{10, 13, 11, 12, 14}));
  EXPECT_THROW(sampler::PackMicroBatch(p, 40), Error);  // packed twice
}

// Loss sum and every trainable gradient of one forward/backward.
struct Result {
  double loss_sum = 0;
  int64_t tokens = 0;
  std::map<std::string, torch::Tensor> grads;
};

// `segmented`: attention by model::SegmentsOf (the trainer's path) instead of the dense mask.
Result Train(MultimodalModel& m, const MicroBatch& mb, bool segmented) {
  for (auto& p : m->parameters()) p.mutable_grad() = torch::Tensor();
  MultimodalBatch batch;
  batch.input_ids = mb.input_ids;
  batch.labels = mb.labels;
  batch.attention_mask = mb.attention_mask;
  batch.position_ids = mb.position_ids;
  batch.images = mb.images;
  batch.logits_for_loss_only = true;
  if (segmented) batch.segments = model::SegmentsOf(mb.attention_mask);
  model::MultimodalOutput out = m->forward(batch);
  out.loss_sum.backward();
  Result r;
  r.loss_sum = out.loss_sum.item<double>();
  r.tokens = out.num_tokens;
  for (const auto& p : m->named_parameters()) {
    if (p.value().grad().defined()) r.grads[p.key()] = p.value().grad().clone();
  }
  return r;
}

TEST(PackMicroBatch, TheModelTrainsOnAPackedBatchAsOnTheUnpackedOne) {
  torch::manual_seed(21);
  const model::ModelConfig c = model::testing::TestConfig();
  MultimodalModel m(c, model::TpGroup{});
  {
    torch::NoGradGuard g;
    for (auto& p : m->parameters()) p.add_(torch::randn_like(p) * 0.05);
  }
  const MicroBatch mb = MakeMicroBatch(c, {3, 1, 2, 0, 2}, {5, 9, 4, 12, 3});
  const Result unpacked = Train(m, mb, /*segmented=*/false);
  const MicroBatch packed = sampler::PackMicroBatch(mb, 48);
  ASSERT_LT(packed.input_ids.size(0), mb.input_ids.size(0));
  // Packed with the dense episode mask, packed and unpacked with segment attention: all the unpacked step.
  for (const auto& [what, mbatch, segmented] :
       {std::make_tuple("packed, dense mask", &packed, false), std::make_tuple("packed, segments", &packed, true),
        std::make_tuple("unpacked, segments", &mb, true)}) {
    const Result p = Train(m, *mbatch, segmented);
    EXPECT_EQ(p.tokens, unpacked.tokens) << what;
    EXPECT_NEAR(p.loss_sum, unpacked.loss_sum, 1e-5 * std::abs(unpacked.loss_sum)) << what;
    ASSERT_EQ(p.grads.size(), unpacked.grads.size()) << what;
    ASSERT_GT(p.grads.size(), 10u);
    for (const auto& [name, g] : unpacked.grads) {
      ASSERT_TRUE(p.grads.count(name)) << name;
      EXPECT_TRUE(torch::allclose(p.grads.at(name), g, 1e-4, 1e-6))
          << what << ", " << name << ": max difference " << (p.grads.at(name) - g).abs().max().item<double>();
    }
  }
  // The check can fail: the same rows with one segment per row (episodes attend each other, positions run on)
  // give another loss, well outside the tolerance above.
  MicroBatch leaky = packed;
  leaky.attention_mask = packed.attention_mask.ne(0).to(torch::kInt64);
  leaky.position_ids = torch::Tensor();
  for (bool segmented : {false, true}) {
    const Result l = Train(m, leaky, segmented);
    EXPECT_GT(std::abs(l.loss_sum - unpacked.loss_sum), 1e-4 * std::abs(unpacked.loss_sum)) << segmented;
  }
}

}  // namespace
}  // namespace lcl
