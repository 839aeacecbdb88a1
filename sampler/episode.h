// LCL episodes as pure functions of (seed, epoch, index): the training policies `2way_weight` (the
// paper's) and `2way_random_shot` over a train-pairs table, and the 2-way evaluation episode over
// test pairs.
//
//   lcl::sampler::EpisodeConfig config;  // 2way_weight, shot 16, default templates
//   lcl::sampler::TrainEpisodes episodes(table, config);
//   lcl::sampler::Episode e = episodes.Build(/*epoch=*/0, /*index=*/17);  // the same on every rank and run
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sampler/pairs_file.h"

namespace lcl::sampler {

enum class Policy { k2WayWeight, k2WayRandomShot };

// "2way_weight" | "2way_random_shot"; throws lcl::ConfigError naming the accepted values.
Policy ParsePolicy(const std::string& name);
const char* PolicyName(Policy policy);

struct EpisodeConfig {
  Policy policy = Policy::k2WayWeight;
  int shot = 16;  // example images per side (the paper: 16); random_shot draws 1..shot
  uint64_t seed = 0;
  std::vector<std::string> templates;  // final-question templates; empty = DefaultTemplates()
  // Fraction of training episodes whose neighbour side is also labelled with a made-up word instead of its
  // class name (drawn per episode, a pure function of the key). 0 = the paper's recipe. With one real name per
  // episode, "the made-up word is the label that is not a class name" answers every episode without linking
  // labels to images; both-made-up episodes can only be answered by linking.
  double made_up_negative = 0.0;
  // Longest made-up word (the paper: 10). Small models trained from scratch learn to copy short words far sooner.
  int made_up_max_letters = 10;
};

struct ImageRef {
  std::string path;    // relative to the ImageNet root
  int class_pos = -1;  // the class it shows (position in its table): a bad image is replaced from this class
};

struct ExampleTurn {
  ImageRef image;
  std::string label;
  bool positive = false;
  std::string class_name;  // the image's class name (for PromptConfig::support_names; empty when unknown)
};

struct Episode {
  uint64_t epoch = 0;
  uint64_t index = 0;
  std::string policy;       // "2way_weight", "2way_random_shot" or "2way_eval"
  int shot = 0;             // per side
  int positive_class = -1;  // positions in the table
  int negative_class = -1;
  std::string positive_label;
  std::string negative_label;
  std::vector<ExampleTurn> examples;  // 2*shot turns, in presentation order
  ImageRef query;
  bool query_positive = true;
  std::string query_label;
  std::string question;  // the final-question template, with "<image>"
};

// A made-up concept name: 1 to max_letters (the paper: 10) lowercase letters, length and letters uniform.
std::string MadeUpWord(uint64_t seed, uint64_t epoch, uint64_t index, int max_letters = 10);

// Neighbour draw for a list of n neighbours: index j with weight n - j (nearest most likely).
std::vector<double> NeighborWeights(size_t n);
// random_shot weights for s = 1..shot: exp(s / 2).
std::vector<double> RandomShotWeights(int shot);

class TrainEpisodes {
 public:
  // Keeps a reference to `table`, which must outlive this object. Throws ConfigError on shot < 1.
  TrainEpisodes(const PairsTable& table, EpisodeConfig config);

  // One epoch visits every class once as the positive class, in a seeded order.
  uint64_t EpisodesPerEpoch() const { return table_.size(); }
  // Pure: depends only on (config.seed, epoch, index). index < EpisodesPerEpoch().
  Episode Build(uint64_t epoch, uint64_t index) const;
  const PairsTable& table() const { return table_; }
  const EpisodeConfig& config() const { return config_; }

 private:
  const PairsTable& table_;
  EpisodeConfig config_;
};

enum class EvalLabels { kClassNames, kMadeUpWords };

// 2-way evaluation: episode i is test image t of class c (classes in file order, then its
// test_samples in order); the negative side is c's partner (2k <-> 2k+1); the query is t, from the
// positive side.
class EvalEpisodes {
 public:
  EvalEpisodes(const std::vector<TestClass>& classes, int shot, uint64_t seed, EvalLabels labels,
               std::vector<std::string> templates = {}, int made_up_max_letters = 10);
  uint64_t size() const { return starts_.empty() ? 0 : starts_.back(); }
  Episode Build(uint64_t index) const;

 private:
  const std::vector<TestClass>& classes_;
  int shot_;
  uint64_t seed_;
  EvalLabels labels_;
  std::vector<std::string> templates_;
  int made_up_max_letters_;
  std::vector<uint64_t> starts_;  // starts_[c+1] = first episode index after class c
};

}  // namespace lcl::sampler
