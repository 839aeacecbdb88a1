// Episode policies as pure functions of (seed, epoch, index), the DP split, exact continuation, and
// the draw frequencies of the 2way_weight / 2way_random_shot / 2way_ref / jigsaw recipes, with and without the
// official draws (with replacement).
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>

#include "cluster/errors.h"
#include "sampler/episode.h"
#include "sampler/rng.h"
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

// The official evaluation draws: each side's support is the first `shot` context images of its class, the same for
// every query of that class, and only the first N test images of a class are asked.
TEST(EvalEpisodes, OfficialDrawsTakeTheFirstShotContextImagesAndTheFirstTestImages) {
  std::vector<TestClass> classes = {{"1", "cat", {"c/0", "c/1", "c/2", "c/3"}, {"c/t0", "c/t1", "c/t2"}},
                                    {"2", "dog", {"d/0", "d/1", "d/2", "d/3"}, {"d/t0"}}};
  EvalEpisodes official(classes, 2, 9, EvalLabels::kClassNames, {}, 10, false, /*first_support=*/true,
                        /*max_test_per_class=*/2);
  ASSERT_EQ(official.size(), 3u);  // cat's first 2 test images + dog's 1
  std::multiset<std::string> first_support;
  for (uint64_t i = 0; i < official.size(); ++i) {
    Episode e = official.Build(i);
    std::multiset<std::string> support;
    for (const ExampleTurn& t : e.examples) support.insert(t.image.path);
    const bool cat = e.query_label == "cat";
    const std::multiset<std::string> expected = {"c/0", "c/1", "d/0", "d/1"};
    EXPECT_EQ(support, expected) << "episode " << i << (cat ? " (cat)" : " (dog)");
  }
  EXPECT_EQ(official.Build(1).query.path, "c/t1");
  EXPECT_EQ(official.Build(2).query.path, "d/t0");
  // lcl's draws: a random subset, so some episode's support differs from the first two images.
  EvalEpisodes random(classes, 2, 9, EvalLabels::kClassNames);
  bool differs = false;
  for (uint64_t i = 0; i < random.size(); ++i) {
    std::multiset<std::string> support;
    for (const ExampleTurn& t : random.Build(i).examples) support.insert(t.image.path);
    differs = differs || support != std::multiset<std::string>{"c/0", "c/1", "d/0", "d/1"};
  }
  EXPECT_TRUE(differs);
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

// ---- Issue 14: the official draws (with replacement), lower-cased names, and the 2way_ref and jigsaw policies.

// Every field of an episode as one string (Fingerprint's and more: classes, sides, class names, epoch and index).
std::string FullFingerprint(const Episode& e) {
  std::string s = e.policy + "|" + std::to_string(e.epoch) + "|" + std::to_string(e.index) + "|" +
                  std::to_string(e.shot) + "|" + std::to_string(e.positive_class) + "|" +
                  std::to_string(e.negative_class) + "|" + e.positive_label + "|" + e.negative_label + "|";
  for (const ExampleTurn& t : e.examples) {
    s += t.image.path + "@" + std::to_string(t.image.class_pos) + ":" + t.label + ":" + (t.positive ? "+" : "-") + ":" +
         t.class_name + ";";
  }
  return s + e.query.path + "@" + std::to_string(e.query.class_pos) + "|" + (e.query_positive ? "+" : "-") + "|" +
         e.query_label + "|" + e.question;
}

// The new fields' values in an episode of the policies that existed before them: none set.
void ExpectNoPolicyTexts(const Episode& e) {
  for (const ExampleTurn& t : e.examples) {
    ASSERT_TRUE(t.image.tile.whole() && t.question.empty() && t.answer.empty());
  }
  ASSERT_TRUE(e.query.tile.whole() && e.query_answer.empty());
}

struct GoldenEpisode {
  const char* policy;
  int shot;
  uint64_t seed;
  double made_up_negative;
  int made_up_max_letters;
  uint64_t epoch, index;
  uint64_t hash;  // StableHash(FullFingerprint(episode)), computed with the code before issue 14
};

TEST(TrainEpisodes, TheDefaultDrawsAreTheSameAsBeforeTheOfficialOptions) {
  const GoldenEpisode golden[] = {
      {"2way_weight", 16, 0u, 0, 10, 0u, 0u, 0x91ee8ecb265cf967ull},
      {"2way_weight", 16, 0u, 0, 10, 0u, 17u, 0x4c492fa909d10cacull},
      {"2way_weight", 16, 0u, 0, 10, 3u, 899u, 0x4d93744c1b93431full},
      {"2way_weight", 16, 0u, 0, 10, 11u, 450u, 0x2c67614943ff76adull},
      {"2way_weight", 16, 42u, 0, 10, 0u, 0u, 0x0d420c1a1a9449c0ull},
      {"2way_weight", 16, 42u, 0, 10, 0u, 17u, 0xbddeda586254a38aull},
      {"2way_weight", 16, 42u, 0, 10, 3u, 899u, 0x3ae88cf50e6ef6acull},
      {"2way_weight", 16, 42u, 0, 10, 11u, 450u, 0x11e45d7a90b93929ull},
      {"2way_random_shot", 16, 7u, 0, 10, 0u, 0u, 0x1ea8564e85a204caull},
      {"2way_random_shot", 16, 7u, 0, 10, 0u, 17u, 0xc5a22bdad538b28bull},
      {"2way_random_shot", 16, 7u, 0, 10, 3u, 899u, 0x8d12ef53decbc4e9ull},
      {"2way_random_shot", 16, 7u, 0, 10, 11u, 450u, 0x12a2af927a03fde3ull},
      {"2way_weight", 4, 3u, 0.5, 6, 0u, 0u, 0x83295683dc2f0fe2ull},
      {"2way_weight", 4, 3u, 0.5, 6, 0u, 17u, 0x5129c96f71c4e1d4ull},
      {"2way_weight", 4, 3u, 0.5, 6, 3u, 899u, 0xe2e6361b8954ef3eull},
      {"2way_weight", 4, 3u, 0.5, 6, 11u, 450u, 0xd680d7a11355a4f8ull},
  };
  for (const GoldenEpisode& g : golden) {
    EpisodeConfig config;
    config.policy = ParsePolicy(g.policy);
    config.shot = g.shot;
    config.seed = g.seed;
    config.made_up_negative = g.made_up_negative;
    config.made_up_max_letters = g.made_up_max_letters;
    Episode e = TrainEpisodes(RealTable(), config).Build(g.epoch, g.index);
    EXPECT_EQ(StableHash(FullFingerprint(e)), g.hash)
        << g.policy << " seed " << g.seed << " (" << g.epoch << ", " << g.index << ")";
    ExpectNoPolicyTexts(e);
  }
  // One in full, so a failure shows what moved.
  EXPECT_EQ(FullFingerprint(TrainEpisodes(RealTable(), EpisodeConfig{}).Build(0, 17)).substr(0, 176),
            "2way_weight|0|17|16|68|795|nhbvlqmlmu|coral fungus|train/n02396427/n02396427_3563.JPEG@68:nhbvlqmlmu:+:"
            "wild boar;train/n02396427/n02396427_15876.JPEG@68:nhbvlqmlmu:+:wild boar;");
  std::vector<TestClass> classes = {{"1", "Tabby Cat", {"c/0", "c/1", "c/2"}, {"c/t0", "c/t1"}},
                                    {"2", "Dog", {"d/0", "d/1", "d/2"}, {"d/t0"}}};
  const uint64_t eval_golden[2][3] = {{0xab09ce4cfbc97382ull, 0x219b5d10f636960dull, 0xb06bdb9ffa727f63ull},
                                      {0xc2fdf8ff16cfb777ull, 0x7886db937a9c549bull, 0x005ada1b8cf0b789ull}};
  for (int l = 0; l < 2; ++l) {
    EvalEpisodes eval(classes, 2, 9, l == 0 ? EvalLabels::kClassNames : EvalLabels::kMadeUpWords);
    for (uint64_t i = 0; i < 3; ++i) EXPECT_EQ(StableHash(FullFingerprint(eval.Build(i))), eval_golden[l][i]);
  }
}

// |observed - expected| within 4 standard deviations for a sum of independent Bernoulli(p_i) indicators.
void ExpectBernoulliSum(int observed, const std::vector<double>& p, const std::string& what) {
  double mean = 0, var = 0;
  for (double q : p) {
    mean += q;
    var += q * (1 - q);
  }
  EXPECT_NEAR(observed, mean, 4 * std::sqrt(var) + 1)
      << what << ": " << observed << " of " << p.size() << ", expected " << mean;
}

// The two figures of the issue, at 16 shots over the official table (36 images a class): with the official draws
// 98% of episodes show a positive image twice and the query is one of its side's examples in 35%; lcl's default
// draws never do either.
TEST(TrainEpisodes, WithReplacementRepeatsImagesAtTheOfficialRates) {
  const PairsTable& t = RealTable();
  EpisodeConfig config;
  config.seed = 5;
  config.draw_with_replacement = true;
  TrainEpisodes official(t, config);
  config.draw_with_replacement = false;
  TrainEpisodes lcl_draws(t, config);
  double no_repeat = 1;  // P(16 uniform draws from 36 images are all different)
  for (int k = 0; k < 16; ++k) no_repeat *= 1 - k / 36.0;
  std::vector<double> p_repeat, p_query_shown;
  int repeats = 0, query_shown = 0, lcl_repeats = 0, lcl_query_shown = 0, listed_first = 0;
  std::vector<int> sample_counts(36, 0);
  int draws = 0;
  for (uint64_t epoch = 0; epoch < 3; ++epoch) {
    for (uint64_t i = 0; i < official.EpisodesPerEpoch(); ++i) {
      for (int which = 0; which < 2; ++which) {
        Episode e = (which == 0 ? official : lcl_draws).Build(epoch, i);
        const ClassPairs& pos = t.classes()[e.positive_class];
        const ClassPairs& neg = t.classes()[e.negative_class];
        std::multiset<std::string> positives;
        std::set<std::string> query_side;
        for (const ExampleTurn& ex : e.examples) {
          if (ex.positive) positives.insert(ex.image.path);
          if (ex.positive == e.query_positive) query_side.insert(ex.image.path);
        }
        const bool repeat = std::set<std::string>(positives.begin(), positives.end()).size() < positives.size();
        const bool shown = query_side.count(e.query.path) > 0;
        if (which == 1) {
          lcl_repeats += repeat;
          lcl_query_shown += shown;
          continue;
        }
        ASSERT_EQ(e.examples.size(), 32u);
        repeats += repeat;
        query_shown += shown;
        p_repeat.push_back(1 - no_repeat);
        // The query is one more uniform draw from its side's images; the neighbour side shows its listed image and
        // 15 draws, and the listed image is among the neighbour's samples for a few classes only.
        std::string listed;
        for (const Neighbor& n : pos.neighbors) {
          if (n.class_id == neg.class_id) listed = n.image_path;
        }
        const bool listed_in_pool = std::count(neg.samples.begin(), neg.samples.end(), listed) > 0;
        p_query_shown.push_back(e.query_positive ? 1 - std::pow(35 / 36.0, 16)
                                                 : 1 - (1 - (listed_in_pool ? 1 / 36.0 : 0)) * std::pow(35 / 36.0, 15));
        for (const ExampleTurn& ex : e.examples) {
          listed_first += !ex.positive && ex.image.path == listed;
          if (!ex.positive) continue;
          auto at = std::find(pos.samples.begin(), pos.samples.end(), ex.image.path);
          ASSERT_NE(at, pos.samples.end());
          ++sample_counts[size_t(at - pos.samples.begin())];
          ++draws;
        }
        const std::vector<std::string>& pool = e.query_positive ? pos.samples : neg.samples;
        ASSERT_NE(std::find(pool.begin(), pool.end(), e.query.path), pool.end());
      }
    }
  }
  const int episodes = int(p_repeat.size());
  std::printf(
      "with replacement, %d episodes at 16 shots: %.1f%% repeat a positive image, the query is one of its "
      "side's examples in %.1f%%\n",
      episodes, 100.0 * repeats / episodes, 100.0 * query_shown / episodes);
  EXPECT_NEAR(1 - no_repeat, 0.98, 0.005);
  ExpectBernoulliSum(repeats, p_repeat, "episodes repeating a positive image");
  ExpectBernoulliSum(query_shown, p_query_shown, "queries that are one of their side's examples");
  EXPECT_NEAR(double(query_shown) / episodes, 0.35, 0.03);
  EXPECT_GE(listed_first, episodes);  // every episode shows the neighbour's listed image
  ExpectFrequencies(sample_counts, std::vector<double>(36, 1.0), draws);  // each draw uniform over the 36
  EXPECT_EQ(lcl_repeats, 0);
  EXPECT_EQ(lcl_query_shown, 0);
}

TEST(TrainEpisodes, LowercaseNamesLowerCasesTheNeighbourLabelOnly) {
  EpisodeConfig config;
  config.seed = 3;
  TrainEpisodes as_is(RealTable(), config);
  config.lowercase_names = true;
  TrainEpisodes lowered(RealTable(), config);
  int mixed_case = 0;
  for (uint64_t i = 0; i < 900; ++i) {
    Episode a = as_is.Build(1, i), b = lowered.Build(1, i);
    std::string lower = a.negative_label;
    for (char& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
    mixed_case += lower != a.negative_label;
    ASSERT_EQ(b.negative_label, lower);
    ASSERT_EQ(b.positive_label, a.positive_label);    // the made-up word
    for (size_t k = 0; k < a.examples.size(); ++k) {  // the same draws; the class names on the turns lowered too
      ASSERT_EQ(b.examples[k].image.path, a.examples[k].image.path);
      std::string name = a.examples[k].class_name;
      for (char& c : name) c = char(std::tolower(static_cast<unsigned char>(c)));
      ASSERT_EQ(b.examples[k].class_name, name);
    }
    ASSERT_EQ(b.query.path, a.query.path);
  }
  EXPECT_GT(mixed_case, 50);  // 99 of the 900 names have capitals ("African elephant")
  std::vector<TestClass> classes = {{"1", "Tabby Cat", {"c/0", "c/1"}, {"c/t0"}}, {"2", "Dog", {"d/0"}, {"d/t0"}}};
  Episode e = EvalEpisodes(classes, 1, 9, EvalLabels::kClassNames, {}, 10, /*lowercase_names=*/true).Build(0);
  EXPECT_EQ(e.query_label, "tabby cat");
  EXPECT_EQ(e.negative_label, "dog");
  EXPECT_EQ(EvalEpisodes(classes, 1, 9, EvalLabels::kClassNames).Build(0).query_label, "Tabby Cat");
}

// The names in a Python list repr "['a_x', 'b_x']".
std::vector<std::string> ParsePythonList(const std::string& text) {
  std::vector<std::string> out;
  EXPECT_TRUE(text.size() >= 2 && text.front() == '[' && text.back() == ']') << text;
  size_t at = 1;
  while (at + 1 < text.size()) {
    EXPECT_EQ(text[at], '\'') << text;
    size_t close = text.find('\'', at + 1);
    out.push_back(text.substr(at + 1, close - at - 1));
    at = close + 1;
    if (text.compare(at, 2, ", ") == 0) at += 2;
  }
  return out;
}

TEST(TrainEpisodes, TwoWayRefFollowsTheOfficialPolicy) {
  const int n = 6;
  PairsTable ring = RingTable(n);
  EpisodeConfig config;
  config.policy = ParsePolicy("2way_ref");
  config.shot = 8;
  config.seed = 11;
  TrainEpisodes episodes(ring, config);
  std::vector<int> shots(6, 0), ranks(n - 1, 0);
  int draws = 0, query_positive = 0;
  for (uint64_t epoch = 0; epoch < 1000; ++epoch) {
    for (uint64_t i = 0; i < n; ++i) {
      Episode e = episodes.Build(epoch, i);
      ASSERT_EQ(e.policy, "2way_ref");
      ASSERT_TRUE(e.shot >= 3 && e.shot <= 8);
      ASSERT_EQ(e.examples.size(), 2u * e.shot);
      ++shots[e.shot - 3];
      ++ranks[(e.negative_class - e.positive_class + n) % n - 1];
      ++draws;
      query_positive += e.query_positive;
      // Every example named <word>_<suffix>, one suffix an episode; the official texts.
      const std::string suffix = e.examples[0].label.substr(e.examples[0].label.find('_') + 1);
      ASSERT_TRUE(suffix.size() >= 1 && suffix.size() <= 10);
      std::vector<std::string> other_side;
      for (const ExampleTurn& t : e.examples) {
        const size_t cut = t.label.find('_');
        ASSERT_NE(cut, std::string::npos);
        ASSERT_TRUE(cut >= 1 && cut <= 10) << t.label;
        ASSERT_EQ(t.label.substr(cut + 1), suffix);
        for (char c : t.label) ASSERT_TRUE((c >= 'a' && c <= 'z') || c == '_') << t.label;
        ASSERT_EQ(t.question, "[BEGIN EXAMPLE] Tell me something about this image <image>.");
        ASSERT_EQ(t.answer, "The reference name of this image is \"" + t.label + "\". [END EXAMPLE]");
        ASSERT_EQ(t.image.path[1] - '0', t.positive ? e.positive_class : e.negative_class);
        if (t.positive != e.query_positive) other_side.push_back(t.label);
      }
      ASSERT_EQ(e.question,
                "Which images in the previous example are in the same category as this image <image>? (Provide the "
                "answer in order as list)");
      // The official answer lists the other side's names, in the order shown, then "._" and the suffix.
      ASSERT_EQ(e.query_answer, e.query_label);
      const size_t end = e.query_answer.rfind("._");
      ASSERT_EQ(e.query_answer.substr(end + 2), suffix);
      ASSERT_EQ(ParsePythonList(e.query_answer.substr(0, end)), other_side) << e.query_answer;
      ASSERT_EQ(other_side.size(), size_t(e.shot));
      ASSERT_EQ(e.query.path[1] - '0', e.query_positive ? e.positive_class : e.negative_class);
      ASSERT_TRUE(e.positive_label.empty() && e.negative_label.empty());
    }
  }
  ExpectFrequencies(shots, std::vector<double>(6, 1.0), draws);  // randint(3, shot): uniform
  ExpectFrequencies(ranks, NeighborWeights(n - 1), draws);
  ExpectFrequencies({query_positive, draws - query_positive}, {1, 1}, draws);
  // A pure function of (seed, epoch, index), and the seed matters.
  EXPECT_EQ(FullFingerprint(episodes.Build(7, 3)), FullFingerprint(TrainEpisodes(ring, config).Build(7, 3)));
  config.seed = 12;
  EXPECT_NE(FullFingerprint(episodes.Build(7, 3)), FullFingerprint(TrainEpisodes(ring, config).Build(7, 3)));
  config.shot = 2;
  lcl::testing::ExpectErrorMentions<ConfigError>([&] { TrainEpisodes bad(ring, config); },
                                                 {"shot=2", "2way_ref", "3..shot"});
}

TEST(TrainEpisodes, JigsawFollowsTheOfficialPolicy) {
  const PairsTable& t = RealTable();
  EpisodeConfig config;
  config.policy = ParsePolicy("jigsaw");
  config.seed = 2;
  TrainEpisodes episodes(t, config);
  const std::vector<JigsawGrid> grids = JigsawGrids();
  std::vector<int> grid_counts(grids.size(), 0), first_shown(4, 0);
  int draws = 0, in_place = 0, pieces_total = 0;
  for (uint64_t epoch = 0; epoch < 4; ++epoch) {
    for (uint64_t i = 0; i < episodes.EpisodesPerEpoch(); ++i) {
      Episode e = episodes.Build(epoch, i);
      ASSERT_EQ(e.policy, "jigsaw");
      const Tile& first = e.examples.at(0).image.tile;
      size_t g = 0;
      while (g < grids.size() && !(grids[g].cols == first.cols && grids[g].rows == first.rows)) ++g;
      ASSERT_LT(g, grids.size()) << first.cols << "x" << first.rows;
      ++grid_counts[g];
      ++draws;
      const size_t pieces = size_t(first.cols * first.rows);
      ASSERT_EQ(e.examples.size(), pieces);
      ASSERT_EQ(e.shot, int(pieces));
      const ClassPairs& cls = t.classes()[e.positive_class];
      ASSERT_NE(std::find(cls.samples.begin(), cls.samples.end(), e.examples[0].image.path), cls.samples.end());
      // Every piece of one image, each once, with the official texts.
      std::set<std::pair<int, int>> cells;
      for (const ExampleTurn& ex : e.examples) {
        ASSERT_EQ(ex.image.path, e.examples[0].image.path);
        ASSERT_EQ(ex.image.class_pos, e.positive_class);
        ASSERT_EQ(ex.image.tile.cols, first.cols);
        ASSERT_EQ(ex.image.tile.rows, first.rows);
        cells.insert({ex.image.tile.col, ex.image.tile.row});
        ASSERT_TRUE(ex.positive);
        ASSERT_EQ(ex.question, "[BEGIN EXAMPLE] This image <image> is a puzzle piece.");
        ASSERT_EQ(ex.answer, "[END EXAMPLE]");
      }
      ASSERT_EQ(cells.size(), pieces);
      if (pieces == 4) ++first_shown[size_t(first.col * 2 + first.row)];
      // The query is the last piece shown (the official code's `image` after its loop).
      ASSERT_EQ(e.query.path, e.examples.back().image.path);
      ASSERT_EQ(e.query.tile.col, e.examples.back().image.tile.col);
      ASSERT_EQ(e.query.tile.row, e.examples.back().image.tile.row);
      ASSERT_EQ(e.question,
                "Using the puzzle pieces provided above to piece together this image <image>, and provide the "
                "coordinates of each piece on the image coordinate system in order.");
      // "The order is: [[c, r], ...]." over every cell once.
      ASSERT_EQ(e.query_answer, e.query_label);
      ASSERT_EQ(e.query_answer.rfind("The order is: [[", 0), 0u) << e.query_answer;
      ASSERT_EQ(e.query_answer.substr(e.query_answer.size() - 3), "]].");
      std::vector<std::pair<int, int>> answered;
      const std::string body = e.query_answer.substr(14);
      for (size_t at = body.find('['); at != std::string::npos; at = body.find('[', at + 1)) {
        if (body[at + 1] == '[') continue;
        int c = -1, r = -1;
        ASSERT_EQ(std::sscanf(body.c_str() + at, "[%d, %d]", &c, &r), 2) << body;
        answered.push_back({c, r});
      }
      ASSERT_EQ(answered.size(), pieces);
      const std::set<std::pair<int, int>> answered_cells(answered.begin(), answered.end());
      ASSERT_EQ(answered_cells, cells);
      for (size_t m = 0; m < pieces; ++m) {
        in_place += answered[m] == std::make_pair(e.examples[m].image.tile.col, e.examples[m].image.tile.row);
      }
      pieces_total += int(pieces);
    }
  }
  std::vector<double> weights;
  for (const JigsawGrid& g : grids) weights.push_back(g.probability);
  ExpectFrequencies(grid_counts, weights, draws);  // 4/6/9/12/16 pieces uniform, then their grids
  int four = 0;
  for (int c : first_shown) four += c;
  ExpectFrequencies(first_shown, {1, 1, 1, 1}, four);  // the pieces shown in a uniformly shuffled order
  // As in the official code, the answered coordinate of the m-th piece shown is its own only by chance: the second
  // shuffle pairs the shown pieces with the coordinates in crop order, so a coordinate matches its piece with
  // probability 1/pieces, one match an episode on average (the fixed points of a uniform permutation: variance 1).
  EXPECT_NEAR(in_place, draws, 4 * std::sqrt(double(draws)));
  EXPECT_LT(in_place, pieces_total / 3);
  EXPECT_EQ(FullFingerprint(episodes.Build(2, 99)), FullFingerprint(TrainEpisodes(t, config).Build(2, 99)));
}

TEST(TrainEpisodes, AnUnknownPolicyOrPadColourNamesTheChoices) {
  lcl::testing::ExpectErrorMentions<ConfigError>([] { ParsePolicy("3way"); },
                                                 {"\"3way\"", "2way_weight", "2way_random_shot", "2way_ref", "jigsaw"});
  EXPECT_EQ(PolicyName(ParsePolicy("jigsaw")), std::string("jigsaw"));
  EXPECT_EQ(PolicyName(ParsePolicy("2way_ref")), std::string("2way_ref"));
}
}  // namespace
}  // namespace lcl::sampler
