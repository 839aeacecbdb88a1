// Episode policies as pure functions of (seed, epoch, index), the DP split, exact continuation, and
// the draw frequencies of the 2way_weight / 2way_random_shot recipes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "cluster/errors.h"
#include "sampler/episode.h"
#include "sampler/sampler_state.h"
#include "tests/sampler/test_util.h"

namespace lcl::sampler {
namespace {

// Everything an episode decides, as one string, so equality checks cover every field.
std::string Fingerprint(const Episode& e) {
  std::string s = e.policy + "|" + std::to_string(e.shot) + "|" + std::to_string(e.positive_class) + "|" +
                  std::to_string(e.negative_class) + "|" + e.positive_label + "|" + e.negative_label + "|";
  for (const ExampleTurn& t : e.examples) s += t.image.path + ":" + t.label + ";";
  return s + e.query.path + "|" + e.query_label + "|" + e.question;
}

const PairsTable& RealTable() {
  static const PairsTable table = PairsTable::Read(testing::SharedData("train900_pairs.jsonl"));
  return table;
}

// n classes; class i has samples "c<i>/0".."c<i>/9" and neighbours i+1, i+2, ... (mod n), nearest
// first.
PairsTable RingTable(int n) {
  std::vector<ClassPairs> classes;
  for (int i = 0; i < n; ++i) {
    ClassPairs c{std::to_string(i + 1), "class " + std::to_string(i), {}, {}};
    for (int k = 0; k < 10; ++k) c.samples.push_back("c" + std::to_string(i) + "/" + std::to_string(k));
    for (int d = 1; d < n; ++d) {
      int j = (i + d) % n;
      c.neighbors.push_back({std::to_string(j + 1), "class " + std::to_string(j), "c" + std::to_string(j) + "/0"});
    }
    classes.push_back(std::move(c));
  }
  return PairsTable::FromClasses(std::move(classes), "ring");
}

TEST(TrainEpisodes, SameSeedGivesIdenticalEpisodesAndOtherSeedsDiffer) {
  EpisodeConfig config;
  config.seed = 42;
  TrainEpisodes a(RealTable(), config), b(RealTable(), config);
  config.seed = 43;
  TrainEpisodes c(RealTable(), config);
  int differ = 0;
  for (uint64_t i = 0; i < 50; ++i) {
    EXPECT_EQ(Fingerprint(a.Build(3, i)), Fingerprint(b.Build(3, i)));
    differ += Fingerprint(a.Build(3, i)) != Fingerprint(c.Build(3, i));
  }
  EXPECT_EQ(differ, 50);
  // Building out of order gives the same episode (no hidden state).
  EXPECT_EQ(Fingerprint(a.Build(3, 7)), Fingerprint(TrainEpisodes(RealTable(), a.config()).Build(3, 7)));
}

TEST(TrainEpisodes, TwoWayWeightFollowsTheOfficialRecipe) {
  const PairsTable& t = RealTable();
  TrainEpisodes episodes(t, EpisodeConfig{});
  for (uint64_t i = 0; i < 200; ++i) {
    Episode e = episodes.Build(0, i);
    ASSERT_EQ(e.shot, 16);
    ASSERT_EQ(e.examples.size(), 32u);
    const ClassPairs& pos = t.classes()[e.positive_class];
    const ClassPairs& neg = t.classes()[e.negative_class];
    // The made-up word: 1-10 lowercase letters; the negative side uses the neighbour's real name.
    ASSERT_GE(e.positive_label.size(), 1u);
    ASSERT_LE(e.positive_label.size(), 10u);
    for (char ch : e.positive_label) ASSERT_TRUE(ch >= 'a' && ch <= 'z') << e.positive_label;
    EXPECT_EQ(e.negative_label, neg.class_name);
    bool neighbour_listed = false;
    for (const Neighbor& n : pos.neighbors) neighbour_listed |= n.class_id == neg.class_id;
    EXPECT_TRUE(neighbour_listed);
    int positives = 0;
    std::set<std::string> neg_paths(neg.samples.begin(), neg.samples.end());
    for (const Neighbor& n : pos.neighbors) {
      if (n.class_id == neg.class_id) neg_paths.insert(n.image_path);
    }
    for (const ExampleTurn& ex : e.examples) {
      if (ex.positive) {
        ++positives;
        EXPECT_EQ(ex.label, e.positive_label);
        EXPECT_NE(std::find(pos.samples.begin(), pos.samples.end(), ex.image.path), pos.samples.end());
      } else {
        EXPECT_EQ(ex.label, e.negative_label);
        EXPECT_TRUE(neg_paths.count(ex.image.path)) << ex.image.path;
      }
    }
    EXPECT_EQ(positives, 16);
    EXPECT_EQ(e.query_label, e.query_positive ? e.positive_label : e.negative_label);
    EXPECT_NE(e.question.find("<image>"), std::string::npos);
  }
}

TEST(TrainEpisodes, AnEpochVisitsEveryClassOnceAsPositive) {
  TrainEpisodes episodes(RealTable(), EpisodeConfig{});
  std::set<int> seen;
  for (uint64_t i = 0; i < episodes.EpisodesPerEpoch(); ++i) seen.insert(episodes.Build(5, i).positive_class);
  EXPECT_EQ(seen.size(), 900u);
  EXPECT_THROW(episodes.Build(5, 900), ConfigError);
}

TEST(SamplerState, OneTwoOrFourDpRanksBuildTheSameGlobalSequence) {
  TrainEpisodes episodes(RealTable(), EpisodeConfig{});
  const uint64_t per_epoch = episodes.EpisodesPerEpoch(), global_batch = 8;
  std::vector<std::vector<std::string>> sequences;
  for (int dp : {1, 2, 4}) {
    std::vector<std::string> seq;
    SamplerState state;
    for (int step = 0; step < 4; ++step) {
      std::vector<std::vector<EpisodeKey>> slices;
      for (int r = 0; r < dp; ++r) slices.push_back(RankSlice(state, global_batch, r, dp, per_epoch));
      // Global position k belongs to rank k % dp, at slot k / dp.
      for (uint64_t k = 0; k < global_batch; ++k) {
        const EpisodeKey& key = slices[k % dp][k / dp];
        seq.push_back(Fingerprint(episodes.Build(key.epoch, key.index)));
      }
      state = Advance(state, global_batch, per_epoch);
    }
    sequences.push_back(seq);
  }
  EXPECT_EQ(sequences[0], sequences[1]);
  EXPECT_EQ(sequences[0], sequences[2]);
  EXPECT_THROW(RankSlice({}, 6, 0, 4, per_epoch), ConfigError);
}

TEST(SamplerState, ContinuationFromEpochAndIndexIsExactAcrossEpochBoundaries) {
  const uint64_t per_epoch = 10, global_batch = 4;
  std::vector<EpisodeKey> uninterrupted;
  SamplerState s;
  for (int step = 0; step < 7; ++step) {
    for (const EpisodeKey& k : GlobalBatch(s, global_batch, per_epoch)) uninterrupted.push_back(k);
    s = Advance(s, global_batch, per_epoch);
  }
  EXPECT_EQ(s, (SamplerState{2, 8}));
  // Resume after 3 steps, with only the saved (epoch, next_index), and another DP size.
  SamplerState saved{1, 2};
  std::vector<EpisodeKey> resumed(uninterrupted.begin(), uninterrupted.begin() + 12);
  for (int step = 3; step < 7; ++step) {
    std::vector<EpisodeKey> r0 = RankSlice(saved, global_batch, 0, 2, per_epoch);
    std::vector<EpisodeKey> r1 = RankSlice(saved, global_batch, 1, 2, per_epoch);
    for (size_t k = 0; k < global_batch; ++k) resumed.push_back(k % 2 == 0 ? r0[k / 2] : r1[k / 2]);
    saved = Advance(saved, global_batch, per_epoch);
  }
  EXPECT_EQ(resumed, uninterrupted);
  // Every key appears once: batches straddle epochs instead of dropping episodes.
  for (size_t i = 0; i < uninterrupted.size(); ++i) {
    EXPECT_EQ(uninterrupted[i].epoch * per_epoch + uninterrupted[i].index, i);
  }
}

// |observed - expected| within 5 standard deviations of a binomial count, for every bin.
void ExpectFrequencies(const std::vector<int>& counts, const std::vector<double>& weights, int draws) {
  double total = 0;
  for (double w : weights) total += w;
  for (size_t j = 0; j < weights.size(); ++j) {
    double p = weights[j] / total;
    double sigma = std::sqrt(draws * p * (1 - p));
    EXPECT_NEAR(counts[j], draws * p, 5 * sigma + 1) << "bin " << j;
  }
}

TEST(TrainEpisodes, NeighbourDrawFollowsWeightsNDownToOne) {
  const int n = 6;
  PairsTable ring = RingTable(n);
  TrainEpisodes episodes(ring, EpisodeConfig{});
  std::vector<int> counts(n - 1, 0);
  int draws = 0, query_positive = 0;
  for (uint64_t epoch = 0; epoch < 3000; ++epoch) {
    for (uint64_t i = 0; i < n; ++i) {
      Episode e = episodes.Build(epoch, i);
      int rank = (e.negative_class - e.positive_class + n) % n - 1;  // 0 = nearest
      ++counts[rank];
      ++draws;
      query_positive += e.query_positive;
    }
  }
  ExpectFrequencies(counts, NeighborWeights(n - 1), draws);  // 5:4:3:2:1
  ExpectFrequencies({query_positive, draws - query_positive}, {1, 1}, draws);
}

TEST(TrainEpisodes, RandomShotDrawsShotWithWeightsExpSOverTwo) {
  PairsTable ring = RingTable(4);
  EpisodeConfig config;
  config.policy = ParsePolicy("2way_random_shot");
  config.shot = 8;
  TrainEpisodes episodes(ring, config);
  std::vector<int> counts(8, 0);
  int draws = 0;
  for (uint64_t epoch = 0; epoch < 5000; ++epoch) {
    for (uint64_t i = 0; i < 4; ++i) {
      Episode e = episodes.Build(epoch, i);
      ASSERT_EQ(e.examples.size(), 2u * e.shot);
      ++counts[e.shot - 1];
      ++draws;
    }
  }
  ExpectFrequencies(counts, RandomShotWeights(8), draws);
  EXPECT_NEAR(RandomShotWeights(8)[7] / RandomShotWeights(8)[6], std::exp(0.5), 1e-12);
  EXPECT_THROW(ParsePolicy("3way"), ConfigError);
}

TEST(MadeUpWord, LengthIsUniformOneToTenAndLettersLowercase) {
  std::vector<int> counts(10, 0);
  const int draws = 20000;
  for (int i = 0; i < draws; ++i) {
    std::string w = MadeUpWord(1, 0, i);
    ASSERT_TRUE(w.size() >= 1 && w.size() <= 10);
    for (char c : w) ASSERT_TRUE(c >= 'a' && c <= 'z');
    ++counts[w.size() - 1];
  }
  ExpectFrequencies(counts, std::vector<double>(10, 1.0), draws);
}

TEST(EvalEpisodes, PairsPartnersAndAsksTheTestImageFromThePositiveSide) {
  std::vector<TestClass> classes = {{"1", "cat", {"c/0", "c/1", "c/2"}, {"c/t0", "c/t1"}},
                                    {"2", "dog", {"d/0", "d/1", "d/2"}, {"d/t0"}},
                                    {"3", "cow", {"w/0", "w/1"}, {"w/t0"}},
                                    {"4", "pig", {"p/0", "p/1"}, {"p/t0"}}};
  EvalEpisodes eval(classes, 2, 9, EvalLabels::kClassNames);
  ASSERT_EQ(eval.size(), 5u);
  Episode e = eval.Build(2);  // dog's only test image, against its partner cat
  EXPECT_EQ(e.query.path, "d/t0");
  EXPECT_TRUE(e.query_positive);
  EXPECT_EQ(e.query_label, "dog");
  EXPECT_EQ(e.negative_label, "cat");
  EXPECT_EQ(e.examples.size(), 4u);
  for (const ExampleTurn& t : e.examples) EXPECT_EQ(t.image.path[0], t.positive ? 'd' : 'c');
  EXPECT_EQ(eval.Build(4).negative_label, "cow");
  EXPECT_EQ(Fingerprint(eval.Build(1)), Fingerprint(EvalEpisodes(classes, 2, 9, EvalLabels::kClassNames).Build(1)));
  EvalEpisodes words(classes, 0, 9, EvalLabels::kMadeUpWords);
  Episode w = words.Build(0);
  EXPECT_TRUE(w.examples.empty());
  EXPECT_NE(w.positive_label, w.negative_label);
  EXPECT_EQ(w.query_label, w.positive_label);
}

TEST(TrainEpisodes, AClassWithoutNeighboursIsRefusedUpFrontNamingIt) {
  std::vector<ClassPairs> classes = RingTable(4).classes();
  classes[2].neighbors.clear();
  const PairsTable table = PairsTable::FromClasses(std::move(classes), "ring");
  lcl::testing::ExpectErrorMentions<DataError>([&] { TrainEpisodes episodes(table, EpisodeConfig{}); },
                                               {"empty \"neighbors\"", "\"3\" (class 2)", "regenerate"});
}

}  // namespace
}  // namespace lcl::sampler
