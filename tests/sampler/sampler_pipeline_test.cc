// The per-rank pipeline: collated micro-batches, ordered bounded prefetching that rethrows at the
// failing item, micro-batch keys that cover the global batch under any DP size, and
// layout-independent images.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>

#include "cluster/errors.h"
#include "sampler/pipeline.h"
#include "sampler/prefetcher.h"
#include "sampler/synth.h"
#include "sampler/tokenizer.h"
#include "tests/sampler/test_util.h"

namespace lcl::sampler {
namespace {

class PipelineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    SynthOptions o;
    o.out = dir_->path();
    o.classes = 8;
    o.images_per_class = 6;
    o.width = o.height = 32;
    SynthResult r = Synthesize(o);
    // One bad file, to exercise replacement inside the pipeline.
    std::filesystem::resize_file(dir_->path() + "/train/n90000001/n90000001_0.JPEG", 0);
    table_ = new PairsTable(PairsTable::Read(r.train_pairs));
    std::vector<std::string> names;
    for (const ClassPairs& c : table_->classes()) names.push_back(c.class_name);
    TrainTokenizer(DefaultTokenizerCorpus(names), 400, dir_->path() + "/tok.model");
    tok_ = new Tokenizer(Tokenizer::Load(dir_->path() + "/tok.model"));
  }
  static void TearDownTestSuite() {
    delete tok_;
    delete table_;
    delete dir_;
  }
  PromptConfig Prompt() const {
    PromptConfig p;
    p.image_tokens = 4;
    return p;
  }
  static ImageSpec Spec() {
    ImageSpec s;
    s.size = 16;
    return s;
  }
  static testing::TempDir* dir_;
  static PairsTable* table_;
  static Tokenizer* tok_;
};
testing::TempDir* PipelineTest::dir_ = nullptr;
PairsTable* PipelineTest::table_ = nullptr;
Tokenizer* PipelineTest::tok_ = nullptr;

TEST_F(PipelineTest, MicroBatchTensorsMatchTheTokenizedEpisodes) {
  EpisodeConfig ec;
  ec.shot = 2;
  TrainEpisodes episodes(*table_, ec);
  ImageLoader loader(dir_->path(), Spec(), 0.5);
  EpisodePipeline pipeline(episodes, *tok_, Prompt(), loader);
  MicroBatch mb = pipeline.Build({{0, 1}, {0, 3}});
  TokenizedPrompt p0 = TokenizeEpisode(episodes.Build(0, 1), *tok_, Prompt());
  TokenizedPrompt p1 = TokenizeEpisode(episodes.Build(0, 3), *tok_, Prompt());
  const int64_t t = int64_t(std::max(p0.input_ids.size(), p1.input_ids.size()));
  ASSERT_EQ(mb.input_ids.sizes(), (std::vector<int64_t>{2, t}));
  EXPECT_EQ(mb.images.sizes(), (std::vector<int64_t>{10, 3, 16, 16}));
  EXPECT_EQ(mb.images_per_episode, (std::vector<int>{5, 5}));
  for (size_t j = 0; j < p1.input_ids.size(); ++j) {
    ASSERT_EQ(mb.input_ids[1][int64_t(j)].item<int64_t>(), p1.input_ids[j]);
    ASSERT_EQ(mb.labels[1][int64_t(j)].item<int64_t>(), p1.labels[j]);
  }
  EXPECT_EQ(mb.attention_mask[0].sum().item<int64_t>(), int64_t(p0.input_ids.size()));
  if (int64_t(p0.input_ids.size()) < t) {
    EXPECT_EQ(mb.input_ids[0][t - 1].item<int64_t>(), tok_->pad_id());
    EXPECT_EQ(mb.labels[0][t - 1].item<int64_t>(), kIgnoreIndex);
  }
  // The query image is the last block of episode 0.
  const Episode e0 = episodes.Build(0, 1);
  torch::Tensor query = loader.Load(e0.query, table_->classes()[e0.query.class_pos].samples);
  EXPECT_TRUE(torch::equal(mb.images[4], query));
}

TEST_F(PipelineTest, PrefetchedMicroBatchesEqualDirectBuildsInOrderAndBadImagesAreReplacedTheSameWay) {
  EpisodeConfig ec;
  ec.shot = 3;
  TrainEpisodes episodes(*table_, ec);
  ImageLoader loader(dir_->path(), Spec(), 0.5);
  EpisodePipeline pipeline(episodes, *tok_, Prompt(), loader);
  const uint64_t per_epoch = episodes.EpisodesPerEpoch();
  // dp=2, global batch 4, micro batch 1: rank 1's micro-batches, prefetched by 2 workers.
  Prefetcher<MicroBatch> prefetch(
      [&](uint64_t k) { return pipeline.Build(MicroBatchKeys({}, 4, 1, 1, 2, per_epoch, k)); }, 2, 2);
  ImageLoader loader1(dir_->path(), Spec(), 0.5);
  EpisodePipeline single(episodes, *tok_, Prompt(), loader1);
  for (uint64_t k = 0; k < 6; ++k) {
    MicroBatch a = prefetch.Next();
    // The same episode built as part of a dp=1 layout (global position 2*(k/2)... of the stream).
    std::vector<EpisodeKey> keys = MicroBatchKeys({}, 4, 1, 1, 2, per_epoch, k);
    MicroBatch b = single.Build(keys);
    ASSERT_EQ(a.keys, keys);
    EXPECT_TRUE(torch::equal(a.input_ids, b.input_ids));
    EXPECT_TRUE(torch::equal(a.images, b.images));
  }
  EXPECT_EQ(loader.bad(), loader1.bad());  // the same bad files, replaced the same way
}

TEST(MicroBatchKeys, RanksMicroBatchesCoverEachGlobalBatchForAnyDp) {
  const uint64_t per_epoch = 7, global_batch = 8;
  SamplerState start{3, 5};
  for (int dp : {1, 2, 4}) {
    const uint64_t micro = 2, per_step = global_batch / dp / micro;
    for (uint64_t step = 0; step < 3; ++step) {
      std::vector<EpisodeKey> expected = GlobalBatch(
          {KeyAt(start, step * global_batch, per_epoch).epoch, KeyAt(start, step * global_batch, per_epoch).index},
          global_batch, per_epoch);
      std::vector<EpisodeKey> got(global_batch);
      for (int r = 0; r < dp; ++r) {
        for (uint64_t m = 0; m < per_step; ++m) {
          std::vector<EpisodeKey> keys =
              MicroBatchKeys(start, global_batch, micro, r, dp, per_epoch, step * per_step + m);
          for (uint64_t j = 0; j < micro; ++j) got[(m * micro + j) * dp + r] = keys[j];
        }
      }
      EXPECT_EQ(got, expected) << "dp " << dp << " step " << step;
    }
  }
  EXPECT_THROW(MicroBatchKeys({}, 8, 3, 0, 2, 7, 0), ConfigError);
}

TEST(Prefetcher, IsOrderedBoundedAndRethrowsAtTheFailingItem) {
  std::atomic<int> made{0}, taken{0}, max_ahead{0};
  {
    Prefetcher<int> p(
        [&](uint64_t k) {
          int ahead = ++made - taken;
          int m = max_ahead;
          while (ahead > m && !max_ahead.compare_exchange_weak(m, ahead)) {
          }
          if (k == 5) throw DataError("item 5 is bad");
          return int(k) * 10;
        },
        3, 2);
    for (int k = 0; k < 5; ++k) {
      EXPECT_EQ(p.Next(), k * 10);
      ++taken;
    }
    EXPECT_THROW(p.Next(), DataError);
    ++taken;
    EXPECT_EQ(p.Next(), 60);  // later items still come
  }
  // depth 2, so at most 2 beyond the consumer plus the one being taken.
  EXPECT_LE(max_ahead.load(), 3);
}

}  // namespace
}  // namespace lcl::sampler
