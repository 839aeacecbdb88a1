// Episode policies: every draw comes from a CounterRng keyed by (seed, epoch, index, purpose).
#include "sampler/episode.h"

#include "cluster/log.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <numeric>

#include "cluster/errors.h"
#include "sampler/rng.h"
#include "sampler/templates.h"

namespace lcl::sampler {
namespace {

// Purposes keep independent streams apart: changing how many draws one part makes never shifts
// another.
constexpr uint64_t kOrderStream = 1;    // class order of an epoch
constexpr uint64_t kEpisodeStream = 2;  // the episode's own draws
constexpr uint64_t kWordStream = 3;     // the made-up word
constexpr uint64_t kEvalStream = 4;
constexpr uint64_t kMadeUpNegativeStream = 5;  // whether the neighbour side gets a made-up word
constexpr uint64_t kRefNameStream = 6;         // 2way_ref's per-image reference names

// The official policies' fixed texts (mllm/dataset/single_image_dataset/imagenet1k.py).
constexpr const char* kRefExampleQuestion = "[BEGIN EXAMPLE] Tell me something about this image <image>.";
constexpr const char* kRefQuestion =
    "Which images in the previous example are in the same category as this image <image>? (Provide the answer in "
    "order as list)";
constexpr const char* kJigsawExampleQuestion = "[BEGIN EXAMPLE] This image <image> is a puzzle piece.";
constexpr const char* kJigsawExampleAnswer = "[END EXAMPLE]";
constexpr const char* kJigsawQuestion =
    "Using the puzzle pieces provided above to piece together this image <image>, and provide the coordinates of "
    "each piece on the image coordinate system in order.";

// `count` images from `pool` without replacement while the pool lasts (then it cycles, reshuffled),
// skipping `exclude` so the neighbour's listed image is not drawn twice.
std::vector<std::string> DrawImages(const std::vector<std::string>& pool, size_t count, CounterRng& rng,
                                    const std::string& exclude = "") {
  std::vector<std::string> candidates;
  for (const std::string& p : pool) {
    if (p != exclude) candidates.push_back(p);
  }
  if (candidates.empty()) candidates = pool;
  std::vector<std::string> out;
  if (candidates.empty()) return out;  // tables reject empty pools; this only guards the loop
  while (out.size() < count) {
    std::vector<std::string> round = candidates;
    rng.Shuffle(round);
    for (size_t i = 0; i < round.size() && out.size() < count; ++i) out.push_back(round[i]);
  }
  return out;
}

// `count` images from `pool`, each an independent uniform draw (the official code's random.choice).
std::vector<std::string> DrawWithReplacement(const std::vector<std::string>& pool, size_t count, CounterRng& rng) {
  std::vector<std::string> out;
  if (pool.empty()) return out;  // tables reject empty pools
  for (size_t i = 0; i < count; ++i) out.push_back(pool[rng.Below(pool.size())]);
  return out;
}

std::string Lowercase(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// 1 to max_letters lowercase letters, length and letters uniform (the official get_random_string).
std::string WordFrom(CounterRng& rng, int max_letters) {
  size_t length = 1 + rng.Below(uint64_t(max_letters));
  std::string word(length, 'a');
  for (char& c : word) c = static_cast<char>('a' + rng.Below(26));
  return word;
}

// Python's str() of a list of strings without quotes in them: ['a_x', 'b_x'] (the official answers are such
// str() calls).
std::string PythonList(const std::vector<std::string>& items) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) out += (i == 0 ? "'" : ", '") + items[i] + "'";
  return out + "]";
}

// Shuffles the 2*shot example turns and pops the query from the chosen side (the last drawn image).
// `pos_name` and `neg_name` are the two classes' names, kept on each example turn.
void Assemble(Episode& e, std::vector<std::string> pos, std::vector<std::string> neg, const std::string& pos_name,
              const std::string& neg_name, CounterRng& rng, const std::vector<std::string>& templates) {
  std::string query_path = e.query_positive ? pos.back() : neg.back();
  (e.query_positive ? pos : neg).pop_back();
  e.query = {query_path, e.query_positive ? e.positive_class : e.negative_class};
  e.query_label = e.query_positive ? e.positive_label : e.negative_label;
  for (const std::string& p : pos) e.examples.push_back({{p, e.positive_class}, e.positive_label, true, pos_name});
  for (const std::string& p : neg) e.examples.push_back({{p, e.negative_class}, e.negative_label, false, neg_name});
  rng.Shuffle(e.examples);
  e.question = templates[rng.Below(templates.size())];
}

}  // namespace

Policy ParsePolicy(const std::string& name) {
  for (Policy p : {Policy::k2WayWeight, Policy::k2WayRandomShot, Policy::k2WayRef, Policy::kJigsaw}) {
    if (name == PolicyName(p)) return p;
  }
  throw ConfigError("unknown episode policy \"" + name +
                    "\"; expected 2way_weight | 2way_random_shot | 2way_ref | jigsaw (data.policy)");
}

const char* PolicyName(Policy policy) {
  switch (policy) {
    case Policy::k2WayWeight:
      return "2way_weight";
    case Policy::k2WayRandomShot:
      return "2way_random_shot";
    case Policy::k2WayRef:
      return "2way_ref";
    case Policy::kJigsaw:
      return "jigsaw";
  }
  return "?";
}

std::string MadeUpWord(uint64_t seed, uint64_t epoch, uint64_t index, int max_letters) {
  if (max_letters < 1) {
    throw ConfigError("made-up words need at least 1 letter, got a maximum of " + std::to_string(max_letters));
  }
  CounterRng rng({seed, epoch, index, kWordStream});
  return WordFrom(rng, max_letters);
}

std::vector<double> NeighborWeights(size_t n) {
  std::vector<double> w(n);
  for (size_t j = 0; j < n; ++j) w[j] = static_cast<double>(n - j);
  return w;
}

std::vector<double> RandomShotWeights(int shot) {
  std::vector<double> w;
  for (int s = 1; s <= shot; ++s) w.push_back(std::exp(s / 2.0));
  return w;
}

std::vector<JigsawGrid> JigsawGrids() {
  return {{2, 2, 1 / 5.0},  {2, 3, 1 / 10.0}, {3, 2, 1 / 10.0}, {3, 3, 1 / 5.0},
          {3, 4, 1 / 10.0}, {4, 3, 1 / 10.0}, {4, 4, 1 / 5.0}};
}

TrainEpisodes::TrainEpisodes(const PairsTable& table, EpisodeConfig config)
    : table_(table), config_(std::move(config)) {
  if (config_.shot < 1) throw ConfigError("episode shot=" + std::to_string(config_.shot) + " must be >= 1");
  if (config_.policy == Policy::k2WayRef && config_.shot < 3) {
    throw ConfigError("episode shot=" + std::to_string(config_.shot) +
                      " is below 3: the 2way_ref policy draws 3..shot images per side (as the official code); raise "
                      "data.shot");
  }
  if (config_.templates.empty()) config_.templates = DefaultTemplates();
  // Up front rather than at the first episode that draws the class: every class is a positive once per epoch, and
  // every policy takes its negative from the positive's neighbours.
  std::string no_neighbors;
  size_t short_classes = 0, short_min = SIZE_MAX;
  std::string short_example;
  const size_t wanted = static_cast<size_t>(config_.shot) + 1;  // the shots of one side, plus a query
  for (const ClassPairs& c : table_.classes()) {
    if (config_.policy != Policy::kJigsaw && c.neighbors.empty() && no_neighbors.size() < 200) {
      no_neighbors += (no_neighbors.empty() ? "" : ", ") + ("\"" + c.class_id + "\" (" + c.class_name + ")");
    }
    if (c.samples.size() < wanted) {
      if (c.samples.size() < short_min) {
        short_min = c.samples.size();
        short_example = "\"" + c.class_id + "\" has " + std::to_string(short_min);
      }
      ++short_classes;
    }
  }
  if (!no_neighbors.empty()) {
    throw DataError("the pairs table has classes with empty \"neighbors\": " + no_neighbors +
                    "; a 2-way episode takes its negative from the positive's neighbours (regenerate the pairs "
                    "file, e.g. `lcl data neighbors`, or drop those classes)");
  }
  if (short_classes > 0) {
    LOG(WARNING) << short_classes << " of " << table_.size() << " classes have fewer than shot + 1 = " << wanted
                 << " images (class " << short_example << "): their episodes repeat images; lower data.shot or add "
                 << "images";
  }
}

Episode TrainEpisodes::Build(uint64_t epoch, uint64_t index) const {
  const uint64_t n = table_.size();
  if (index >= n) {
    throw ConfigError("episode index " + std::to_string(index) + " is past the epoch's " + std::to_string(n) +
                      " episodes");
  }
  // The epoch's class order: a seeded permutation (O(classes), negligible beside decoding images).
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  CounterRng order_rng({config_.seed, epoch, kOrderStream});
  order_rng.Shuffle(order);

  CounterRng rng({config_.seed, epoch, index, kEpisodeStream});
  Episode e;
  e.epoch = epoch;
  e.index = index;
  e.policy = PolicyName(config_.policy);
  e.shot = config_.shot;
  e.positive_class = order[index];
  if (config_.policy == Policy::kJigsaw) {
    BuildJigsaw(e, rng);
    return e;
  }
  if (config_.policy == Policy::k2WayRandomShot) e.shot = 1 + int(rng.Weighted(RandomShotWeights(config_.shot)));
  if (config_.policy == Policy::k2WayRef) e.shot = 3 + int(rng.Below(uint64_t(config_.shot - 2)));  // randint(3, shot)
  const ClassPairs& pos_class = table_.classes()[e.positive_class];
  if (pos_class.neighbors.empty()) {
    throw DataError("class_id \"" + pos_class.class_id + "\" (" + pos_class.class_name +
                    ") has no neighbours; a 2-way episode needs at least one (regenerate the pairs file)");
  }
  size_t j = rng.Weighted(NeighborWeights(pos_class.neighbors.size()));
  e.negative_class = table_.NeighborIndex(e.positive_class, j);
  const ClassPairs& neg_class = table_.classes()[e.negative_class];
  const std::string pos_name = config_.lowercase_names ? Lowercase(pos_class.class_name) : pos_class.class_name;
  const std::string neg_name = config_.lowercase_names ? Lowercase(neg_class.class_name) : neg_class.class_name;
  e.positive_label = MadeUpWord(config_.seed, epoch, index, config_.made_up_max_letters);
  e.negative_label = neg_name;
  e.query_positive = rng.Below(2) == 0;
  if (config_.made_up_negative > 0) {  // its own stream: the default recipe's draws stay as they were
    CounterRng side({config_.seed, epoch, index, kMadeUpNegativeStream});
    if (side.Uniform() < config_.made_up_negative) {
      uint64_t salt = 0;
      do {
        e.negative_label = MadeUpWord(config_.seed ^ 0x6e6567ULL, epoch, index * 64 + salt++,  // "neg"
                                      config_.made_up_max_letters);
      } while (e.negative_label == e.positive_label);
    }
  }

  // One extra image on the query's side; the negative side starts with the neighbour's listed
  // image.
  const size_t shot = static_cast<size_t>(e.shot);
  const size_t pos_count = shot + (e.query_positive ? 1 : 0), neg_count = shot - 1 + (e.query_positive ? 0 : 1);
  const std::string& listed = pos_class.neighbors[j].image_path;
  std::vector<std::string> pos, neg = {listed}, more;
  if (config_.draw_with_replacement) {  // the official draws: the listed image may come again
    pos = DrawWithReplacement(pos_class.samples, pos_count, rng);
    more = DrawWithReplacement(neg_class.samples, neg_count, rng);
  } else {
    pos = DrawImages(pos_class.samples, pos_count, rng);
    more = DrawImages(neg_class.samples, neg_count, rng, listed);
  }
  neg.insert(neg.end(), more.begin(), more.end());
  Assemble(e, std::move(pos), std::move(neg), pos_name, neg_name, rng, config_.templates);
  if (config_.policy == Policy::k2WayRef) NameReferences(e);
  return e;
}

// The official policy_2way_ref: every example image gets its own reference name, a made-up word joined to the
// episode's made-up suffix ("abc_xyz"); the query asks which examples share its category, answered with a Python
// list of names in presentation order, then "._" and the suffix. The official code lists the side the query is NOT
// on (its order_list takes the neighbour names for a query of the positive class, and the reverse), and so does
// this.
void TrainEpisodes::NameReferences(Episode& e) const {
  const std::string suffix = e.positive_label;  // the episode's made-up word, drawn as in 2way_weight
  CounterRng names({config_.seed, e.epoch, e.index, kRefNameStream});
  std::vector<std::string> answer;
  for (ExampleTurn& t : e.examples) {
    t.label = WordFrom(names, config_.made_up_max_letters) + "_" + suffix;
    t.question = kRefExampleQuestion;
    t.answer = "The reference name of this image is \"" + t.label + "\". [END EXAMPLE]";
    if (t.positive != e.query_positive) answer.push_back(t.label);
  }
  e.positive_label.clear();
  e.negative_label.clear();
  e.question = kRefQuestion;
  e.query_label = e.query_answer = PythonList(answer) + "._" + suffix;
}

// The official policy_jigsaw: one image of the class cut into a grid of 4 to 16 pieces, shown one per example turn
// in a shuffled order, and the coordinates [column, row] of the pieces as the answer. As in the official code, the
// answer's coordinates are shuffled by a second permutation that is applied to the already shuffled pieces but to
// the coordinates in crop order, so they do not follow the pieces shown; and the query image is the last piece shown.
void TrainEpisodes::BuildJigsaw(Episode& e, CounterRng& rng) const {
  static const std::vector<std::vector<std::pair<int, int>>> kGridsByCount = {
      {{2, 2}}, {{2, 3}, {3, 2}}, {{3, 3}}, {{3, 4}, {4, 3}}, {{4, 4}}};  // 4, 6, 9, 12, 16 pieces
  const std::vector<std::pair<int, int>>& grids = kGridsByCount[rng.Below(kGridsByCount.size())];
  const auto [cols, rows] = grids[rng.Below(grids.size())];
  const ClassPairs& cls = table_.classes()[e.positive_class];
  const std::string& path = cls.samples[rng.Below(cls.samples.size())];
  const std::string name = config_.lowercase_names ? Lowercase(cls.class_name) : cls.class_name;
  std::vector<Tile> crop_order;  // the official crop loop: column by column, each column top to bottom
  for (int c = 0; c < cols; ++c) {
    for (int r = 0; r < rows; ++r) crop_order.push_back({cols, rows, c, r});
  }
  std::vector<Tile> pieces = crop_order;
  rng.Shuffle(pieces);  // the first shuffle (the pieces with their coordinates, which it then drops)
  std::vector<size_t> perm(pieces.size());
  std::iota(perm.begin(), perm.end(), size_t(0));
  rng.Shuffle(perm);  // the second: pieces[perm[m]] is shown m-th, crop_order[perm[m]] answered m-th
  std::string coords;
  for (size_t m = 0; m < perm.size(); ++m) {
    ExampleTurn t;
    t.image = {path, e.positive_class, pieces[perm[m]]};
    t.positive = true;
    t.class_name = name;
    t.question = kJigsawExampleQuestion;
    t.answer = kJigsawExampleAnswer;
    e.examples.push_back(std::move(t));
    const Tile& at = crop_order[perm[m]];
    coords += (m == 0 ? "[" : ", [") + std::to_string(at.col) + ", " + std::to_string(at.row) + "]";
  }
  e.shot = static_cast<int>(e.examples.size());
  e.query = e.examples.back().image;
  e.query_positive = true;
  e.question = kJigsawQuestion;
  e.query_label = e.query_answer = "The order is: [" + coords + "].";
}

EvalEpisodes::EvalEpisodes(const std::vector<TestClass>& classes, int shot, uint64_t seed, EvalLabels labels,
                           std::vector<std::string> templates, int made_up_max_letters, bool lowercase_names,
                           bool first_support, int max_test_per_class)
    : classes_(classes),
      shot_(shot),
      seed_(seed),
      labels_(labels),
      templates_(std::move(templates)),
      made_up_max_letters_(made_up_max_letters),
      lowercase_names_(lowercase_names),
      first_support_(first_support) {
  if (shot < 0) throw ConfigError("eval shot=" + std::to_string(shot) + " must be >= 0");
  if (classes.size() % 2 != 0) {
    throw DataError("eval needs an even number of test classes (2k and 2k+1 are partners), found " +
                    std::to_string(classes.size()));
  }
  if (templates_.empty()) templates_ = DefaultTemplates();
  starts_.push_back(0);
  for (const TestClass& c : classes_) {
    const size_t n = c.test_samples.size();
    starts_.push_back(starts_.back() +
                      (max_test_per_class > 0 ? std::min(n, static_cast<size_t>(max_test_per_class)) : n));
  }
}

Episode EvalEpisodes::Build(uint64_t index) const {
  if (index >= size()) {
    throw ConfigError("eval episode " + std::to_string(index) + " is past the " + std::to_string(size()));
  }
  size_t c = std::upper_bound(starts_.begin(), starts_.end(), index) - starts_.begin() - 1;
  size_t partner = c ^ 1;
  const TestClass& pos = classes_[c];
  const TestClass& neg = classes_[partner];
  CounterRng rng({seed_, index, kEvalStream});
  Episode e;
  e.index = index;
  e.policy = "2way_eval";
  e.shot = shot_;
  e.positive_class = static_cast<int>(c);
  e.negative_class = static_cast<int>(partner);
  const std::string pos_name = lowercase_names_ ? Lowercase(pos.class_name) : pos.class_name;
  const std::string neg_name = lowercase_names_ ? Lowercase(neg.class_name) : neg.class_name;
  if (labels_ == EvalLabels::kClassNames) {
    e.positive_label = pos_name;
    e.negative_label = neg_name;
  } else {
    e.positive_label = MadeUpWord(seed_, 0, index, made_up_max_letters_);
    do {  // two made-up words that differ, or the episode would be unanswerable
      e.negative_label = MadeUpWord(seed_, 1, rng.NextU64(), made_up_max_letters_);
    } while (e.negative_label == e.positive_label);
  }
  e.query_positive = true;
  auto support = [&](const TestClass& t) {
    if (!first_support_) return DrawImages(t.context_samples, shot_, rng);
    const size_t n = std::min(t.context_samples.size(), static_cast<size_t>(shot_));
    return std::vector<std::string>(t.context_samples.begin(), t.context_samples.begin() + static_cast<long>(n));
  };
  std::vector<std::string> pos_images = support(pos);
  pos_images.push_back(pos.test_samples[index - starts_[c]]);
  std::vector<std::string> neg_images = support(neg);
  Assemble(e, std::move(pos_images), std::move(neg_images), pos_name, neg_name, rng, templates_);
  return e;
}

}  // namespace lcl::sampler
