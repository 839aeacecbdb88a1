// The class plan of a synthetic dataset: families, visual recipes, invented names and the test
// split.
#include <algorithm>
#include <cmath>
#include <set>

#include "cluster/errors.h"
#include "sampler/rng.h"
#include "sampler/synth.h"

namespace lcl::sampler {
namespace {

// A pronounceable invented word of `syllables` consonant-vowel pairs.
std::string InventWord(CounterRng& rng, int syllables) {
  static const char* kOnsets[] = {"b", "d", "f", "g", "k", "l",  "m",  "n",  "p",
                                  "r", "s", "t", "v", "z", "sh", "tr", "gl", "kr"};
  static const char* kVowels[] = {"a", "e", "i", "o", "u", "ai", "oo"};
  std::string w;
  for (int i = 0; i < syllables; ++i) {
    w += kOnsets[rng.Below(std::size(kOnsets))];
    w += kVowels[rng.Below(std::size(kVowels))];
  }
  if (rng.Below(2)) w += "n";
  return w;
}

void CheckOptions(const SynthOptions& o) {
  auto bad = [](const std::string& what) { throw ConfigError("data synth: " + what); };
  if (o.classes < 4) bad("--classes " + std::to_string(o.classes) + " must be >= 4 (train and test families)");
  if (o.images_per_class < 2) bad("--images-per-class must be >= 2 (context and test images)");
  if (o.family_size < 2) bad("--family-size must be >= 2 (a family is a set of similar classes)");
  if (o.width < 16 || o.height < 16) bad("--size must be at least 16x16");
  if (o.test_fraction <= 0 || o.test_fraction >= 1) bad("test_fraction must be in (0, 1)");
}

}  // namespace

std::vector<SynthClass> PlanSynthClasses(const SynthOptions& o) {
  CheckOptions(o);
  const int families = (o.classes + o.family_size - 1) / o.family_size;
  if (families < 2) {
    throw ConfigError("data synth: " + std::to_string(o.classes) + " classes with family size " +
                      std::to_string(o.family_size) + " make one family; need 2 (train and test)");
  }
  CounterRng rng({o.seed, 0x73796e7468ULL});  // "synth"
  // Hues spread evenly over the families and shapes cycle, so every family has its own colour and
  // families that share a shape differ in colour.
  std::vector<double> family_hue(families);
  for (int f = 0; f < families; ++f) family_hue[f] = 360.0 * f / families + 10.0 * rng.Uniform();
  // Whole families are held out, chosen by a seeded shuffle; test families keep even sizes so pairs
  // stay inside.
  std::vector<int> order(families);
  for (int f = 0; f < families; ++f) order[f] = f;
  rng.Shuffle(order);
  int test_families = std::max(1, static_cast<int>(std::lround(families * o.test_fraction)));
  test_families = std::min(test_families, families - 1);
  std::set<int> test(order.begin(), order.begin() + test_families);

  std::vector<SynthClass> out;
  std::set<std::string> names;
  std::vector<std::string> family_word(families);
  for (int f = 0; f < families; ++f) family_word[f] = InventWord(rng, 2);
  for (int i = 0; i < o.classes; ++i) {
    SynthClass c;
    c.id = i + 1;
    c.family = i / o.family_size;
    c.member = i % o.family_size;
    const int members = std::min(o.family_size, o.classes - c.family * o.family_size);
    c.shape = c.family % 4;
    c.hue = family_hue[c.family];
    c.stripe_deg = 180.0 * c.member / members;
    c.shade = members > 1 ? double(c.member) / (members - 1) : 0.0;
    c.test = test.count(c.family) > 0;
    char wnid[16];
    std::snprintf(wnid, sizeof(wnid), "n9%07d", c.id);
    c.wnid = wnid;
    do {  // "<member word> <family word>": family members share the second word, as real synsets
          // often do
      c.name = InventWord(rng, 1 + static_cast<int>(rng.Below(2))) + " " + family_word[c.family];
    } while (!names.insert(c.name).second);
    out.push_back(std::move(c));
  }
  // A test family of odd size would split a 2-way pair across families: its last class trains
  // instead.
  for (int f : test) {
    int count = 0, last = -1;
    for (const SynthClass& c : out) {
      if (c.family == f) ++count, last = c.id - 1;
    }
    if (count % 2 == 1) out[last].test = false;
  }
  return out;
}

}  // namespace lcl::sampler
