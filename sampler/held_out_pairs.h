// The held-out (test) classes of an index JSON from `lcl data index` as 2-way evaluation pairs in the
// test100 layout, so the ImageNet-100 evaluation episodes (EvalEpisodes) run on them unchanged.
//
//   lcl::sampler::HeldOutPairs pairs = lcl::sampler::ReadHeldOutPairs("index.json", "");  // root: the index's
//   lcl::sampler::EvalEpisodes episodes(pairs.classes, /*shot=*/4, /*seed=*/7, EvalLabels::kMadeUpWords);
#pragma once

#include <string>
#include <vector>

#include "sampler/pairs_file.h"

namespace lcl::sampler {

struct HeldOutPairs {
  std::string index_path;
  std::string image_root;          // the ImageNet root the image paths are relative to
  std::vector<TestClass> classes;  // split.test classes in the index's order: 2k and 2k+1 are partners
  std::string dropped_class_id;    // the last test class, left out when their number is odd ("" if none)
};

// Reads the index, then lists the images of its test classes under `image_root` (empty = the index's "root").
// Pairs: the test classes in the order of the index's split.test list, 2k with 2k+1 (`lcl data synth` numbers a
// family's classes consecutively, so a sorted split pairs members of one family: the hard 2-way case).
// Images of a class: with val images, every train image is support and the val images are the queries; without,
// its sorted train images are split in two, the first half support and the rest queries (as `lcl data synth`
// splits its test_pairs.jsonl). Throws lcl::DataError naming the index (and the class) on an unreadable or
// malformed index, a test class missing from it or from the tree, a class with too few images, or fewer than two
// test classes.
HeldOutPairs ReadHeldOutPairs(const std::string& index_path, const std::string& image_root);

}  // namespace lcl::sampler
