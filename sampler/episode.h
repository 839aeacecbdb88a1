// LCL episodes as pure functions of (seed, epoch, index): the training policies `2way_weight` (the
// paper's), `2way_random_shot`, `2way_ref` and `jigsaw` (the official code's, docs/data.md) over a train-pairs
// table, and the 2-way evaluation episode over test pairs.
//
//   lcl::sampler::EpisodeConfig config;  // 2way_weight, shot 16, default templates
//   lcl::sampler::TrainEpisodes episodes(table, config);
//   lcl::sampler::Episode e = episodes.Build(/*epoch=*/0, /*index=*/17);  // the same on every rank and run
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "sampler/pairs_file.h"

namespace lcl::sampler {

class CounterRng;

enum class Policy { k2WayWeight, k2WayRandomShot, k2WayRef, kJigsaw };

// "2way_weight" | "2way_random_shot" | "2way_ref" | "jigsaw"; throws lcl::ConfigError naming the accepted values.
Policy ParsePolicy(const std::string& name);
const char* PolicyName(Policy policy);

struct EpisodeConfig {
  Policy policy = Policy::k2WayWeight;
  int shot = 16;  // example images per side (the paper: 16); random_shot draws 1..shot, 2way_ref 3..shot
  uint64_t seed = 0;
  std::vector<std::string> templates;  // final-question templates; empty = DefaultTemplates()
  // Fraction of training episodes whose neighbour side is also labelled with a made-up word instead of its
  // class name (drawn per episode, a pure function of the key). 0 = the paper's recipe. With one real name per
  // episode, "the made-up word is the label that is not a class name" answers every episode without linking
  // labels to images; both-made-up episodes can only be answered by linking.
  double made_up_negative = 0.0;
  // Longest made-up word (the paper: 10). Small models trained from scratch learn to copy short words far sooner.
  int made_up_max_letters = 10;
  // Every image an independent uniform draw from its side's samples, as the official code draws them (so an
  // episode may show an image twice and ask an example again as the query); false: without replacement while the
  // pool lasts, the neighbour's listed image not drawn again.
  bool draw_with_replacement = false;
  // Class names lower-cased where they are labels (the neighbour side's answer), as the official code does.
  bool lowercase_names = false;
};

// A piece of an image cut into a cols x rows grid (the jigsaw policy): column `col`, row `row`, each piece
// floor(width / cols) x floor(height / rows) pixels from the top-left corner, as the official crop. 1 x 1 is
// the whole image.
struct Tile {
  int cols = 1;
  int rows = 1;
  int col = 0;
  int row = 0;
  bool whole() const { return cols == 1 && rows == 1; }
};

struct ImageRef {
  // A constructor rather than an aggregate, so that the many {path, class_pos} initialisers need not name `tile`.
  ImageRef(std::string path = "", int class_pos = -1, Tile tile = {})
      : path(std::move(path)), class_pos(class_pos), tile(tile) {}
  std::string path;  // relative to the ImageNet root
  int class_pos;     // the class it shows (position in its table): a bad image is replaced from this class
  Tile tile;         // the piece of the file shown (the whole image but in jigsaw episodes)
};

struct ExampleTurn {
  // As ImageRef's: {image, label, positive, class_name} initialisers leave the policy texts empty.
  ExampleTurn(ImageRef image = {}, std::string label = "", bool positive = false, std::string class_name = "",
              std::string question = "", std::string answer = "")
      : image(std::move(image)),
        label(std::move(label)),
        positive(positive),
        class_name(std::move(class_name)),
        question(std::move(question)),
        answer(std::move(answer)) {}
  ImageRef image;
  std::string label;
  bool positive;
  std::string class_name;  // the image's class name (for PromptConfig::support_names; empty when unknown)
  // The turn's own question and answer where the policy defines them (2way_ref, jigsaw); empty: the layout's
  // question and its answer from `label`.
  std::string question;
  std::string answer;
};

// One user/assistant exchange; `user` may hold "<image>".
struct Turn {
  std::string user;
  std::string assistant;
};

struct Episode {
  uint64_t epoch = 0;
  uint64_t index = 0;
  std::string policy;       // "2way_weight", "2way_random_shot", "2way_ref", "jigsaw" or "2way_eval"
  int shot = 0;             // per side (jigsaw: the number of pieces, all on the positive side)
  int positive_class = -1;  // positions in the table
  int negative_class = -1;
  std::string positive_label;  // the sides' labels; empty in 2way_ref and jigsaw, whose turns carry their own
  std::string negative_label;
  std::vector<ExampleTurn> examples;  // 2*shot turns (jigsaw: shot), in presentation order
  ImageRef query;
  bool query_positive = true;
  std::string query_label;
  std::string question;  // the final-question template, with "<image>"
  // The whole final answer where the policy defines its own (2way_ref, jigsaw; then query_label holds the same
  // text); empty: the layout's answer from query_label.
  std::string query_answer;
  // An instruction conversation (policy "llava": a LLaVA-format record, sampler/instruct.h) instead of an LCL
  // episode: its exchanges in order, the one "<image>" in a user text; the image is `query`, and every answer is
  // labelled. Empty for LCL episodes.
  std::vector<Turn> conversation;
};

// A made-up concept name: 1 to max_letters (the paper: 10) lowercase letters, length and letters uniform.
std::string MadeUpWord(uint64_t seed, uint64_t epoch, uint64_t index, int max_letters = 10);

// Neighbour draw for a list of n neighbours: index j with weight n - j (nearest most likely).
std::vector<double> NeighborWeights(size_t n);
// random_shot weights for s = 1..shot: exp(s / 2).
std::vector<double> RandomShotWeights(int shot);
// The jigsaw grids (columns x rows), each equally likely: the piece count uniform over 4, 6, 9, 12, 16, then its
// grids uniform (6: 2x3 or 3x2; 12: 3x4 or 4x3), as the official policy_jigsaw. {cols, rows, probability}.
struct JigsawGrid {
  int cols;
  int rows;
  double probability;
};
std::vector<JigsawGrid> JigsawGrids();

class TrainEpisodes {
 public:
  // Keeps a reference to `table`, which must outlive this object. Throws ConfigError on shot < 1 (2way_ref: < 3).
  TrainEpisodes(const PairsTable& table, EpisodeConfig config);

  // One epoch visits every class once as the positive class, in a seeded order.
  uint64_t EpisodesPerEpoch() const { return table_.size(); }
  // Pure: depends only on (config.seed, epoch, index). index < EpisodesPerEpoch().
  Episode Build(uint64_t epoch, uint64_t index) const;
  const PairsTable& table() const { return table_; }
  const EpisodeConfig& config() const { return config_; }

 private:
  void NameReferences(Episode& e) const;                // 2way_ref's names and texts over a 2-way episode
  void BuildJigsaw(Episode& e, CounterRng& rng) const;  // e has its positive class

  const PairsTable& table_;
  EpisodeConfig config_;
};

enum class EvalLabels { kClassNames, kMadeUpWords };

// 2-way evaluation: episode i is test image t of class c (classes in file order, then its
// test_samples in order); the negative side is c's partner (2k <-> 2k+1); the query is t, from the
// positive side.
class EvalEpisodes {
 public:
  // lowercase_names: class-name labels lower-cased, as the official evaluation does.
  // first_support: each side's support is the first `shot` context images of its class (the official evaluation),
  // not a random subset; max_test_per_class > 0: only the first that many test images of each class are queries.
  EvalEpisodes(const std::vector<TestClass>& classes, int shot, uint64_t seed, EvalLabels labels,
               std::vector<std::string> templates = {}, int made_up_max_letters = 10, bool lowercase_names = false,
               bool first_support = false, int max_test_per_class = 0);
  uint64_t size() const { return starts_.empty() ? 0 : starts_.back(); }
  Episode Build(uint64_t index) const;

 private:
  const std::vector<TestClass>& classes_;
  int shot_;
  uint64_t seed_;
  EvalLabels labels_;
  std::vector<std::string> templates_;
  int made_up_max_letters_;
  bool lowercase_names_;
  bool first_support_;
  std::vector<uint64_t> starts_;  // starts_[c+1] = first episode index after class c
};

}  // namespace lcl::sampler
