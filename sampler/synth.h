// `lcl data synth`: a small ImageNet-format dataset of real JPEGs whose classes come in families of
// genuinely similar classes (same shape and hue; members differ in shade and stripe orientation), so
// hard-negative neighbours mean something and a tiny model with a frozen random tower can still tell them
// apart (docs/data.md has the measurement).
//
//   lcl::sampler::SynthOptions o;
//   o.out = "/tmp/synth"; o.classes = 16; o.images_per_class = 20;
//   lcl::sampler::SynthResult r = lcl::sampler::Synthesize(o);  // writes train/, pairs files, mapping
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lcl::sampler {

struct SynthOptions {
  std::string out;  // created if missing; existing synth files are overwritten
  int classes = 16;
  int images_per_class = 20;
  uint64_t seed = 0;
  int width = 128;  // JPEG size; ImageNet-like is 500x375
  int height = 128;
  int family_size = 4;          // classes per family (the last family may be smaller)
  double test_fraction = 0.25;  // share of families held out as test classes (at least one family)
  int neighbors = 36;           // neighbour list length (capped at train classes - 1)
  int jpeg_quality = 90;
};

// What the visual recipe of one class is; exposed so tests can check that families share shape and
// colour.
struct SynthClass {
  int id = 0;  // 1-based
  std::string wnid;
  std::string name;
  int family = 0;
  int member = 0;         // position in the family
  int shape = 0;          // 0 circle, 1 square, 2 triangle, 3 diamond: shared by the family
  double hue = 0;         // degrees, shared by the family
  double stripe_deg = 0;  // the member's stripe orientation
  double shade = 0;       // the member's shade in [0, 1]: 0 light and pale, 1 dark and saturated
  bool test = false;
};

struct SynthResult {
  std::vector<SynthClass> classes;
  int families = 0;
  size_t images = 0;
  // Files written under out/.
  std::string synset_mapping;  // LOC_synset_mapping.txt
  std::string train_pairs;     // train_pairs.jsonl (official train900 format, train classes only)
  std::string test_pairs;      // test_pairs.jsonl (official test100 format; 2k, 2k+1 share a family)
  std::string split;           // class_split.json: {"train": [ids], "test": [ids], "families": [[ids]]}
  std::string instruct;        // llava_instruct.json: LLaVA-format image -> class name conversations, train classes
};

// The class recipes alone (no files): a pure function of the options.
std::vector<SynthClass> PlanSynthClasses(const SynthOptions& options);

// Writes the dataset. Throws lcl::ConfigError on bad options, lcl::DataError on write failures.
SynthResult Synthesize(const SynthOptions& options);

}  // namespace lcl::sampler
