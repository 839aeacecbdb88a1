// The official LCL class tables: `train900_pairs.jsonl` (samples + ranked neighbours per class) and
// the evaluation `test100_pairs.jsonl` (context and test samples; classes 2k and 2k+1 form a 2-way
// pair).
//
//   auto table = lcl::sampler::PairsTable::Read("../shared/data/lcl/train900_pairs.jsonl");
//   const auto& kit_fox = table.classes()[0];
//   int nearest = table.NeighborIndex(0, 0);  // position of kit fox's nearest neighbour in classes()
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace lcl::sampler {

struct Neighbor {
  std::string class_id;  // ImageNet-1k index as a string, 1-based
  std::string class_name;
  std::string image_path;  // one image of the neighbour class, relative to the ImageNet root
};

struct ClassPairs {
  std::string class_id;
  std::string class_name;
  std::vector<std::string> samples;  // image paths relative to the ImageNet root
  std::vector<Neighbor> neighbors;   // most to least similar
};

// A train-pairs table with every neighbour id resolved to a line of the same file: the negative
// side of an episode draws more images of the neighbour class from that class's own `samples`.
class PairsTable {
 public:
  // Reads the official jsonl format. Throws lcl::DataError naming the file, line and field.
  static PairsTable Read(const std::string& path);
  // Validates (unique ids, non-empty samples, known neighbour ids); `origin` names the source in
  // errors.
  static PairsTable FromClasses(std::vector<ClassPairs> classes, const std::string& origin);

  // Writes the official format, one JSON object per line in classes() order.
  void Write(const std::string& path) const;

  const std::vector<ClassPairs>& classes() const { return classes_; }
  size_t size() const { return classes_.size(); }
  // Position in classes() of neighbour `j` of class `cls`.
  int NeighborIndex(size_t cls, size_t j) const { return neighbor_index_[cls][j]; }
  // Position of `class_id` in classes(), or -1.
  int Find(const std::string& class_id) const;
  // Distinct image paths over samples and neighbour images.
  size_t DistinctImageCount() const;

 private:
  // `lines` gives each class's line in the source file (empty when built in memory).
  static PairsTable Build(std::vector<ClassPairs> classes, const std::string& origin, const std::vector<size_t>& lines);

  std::vector<ClassPairs> classes_;
  std::vector<std::vector<int>> neighbor_index_;  // [class][neighbour] -> position in classes_
};

// One evaluation class: `shot` context images are drawn from context_samples, queries from
// test_samples.
struct TestClass {
  std::string class_id;
  std::string class_name;
  std::vector<std::string> context_samples;
  std::vector<std::string> test_samples;
};

// Reads `test100_pairs.jsonl` (an even number of classes; 2k and 2k+1 are partners).
std::vector<TestClass> ReadTestPairs(const std::string& path);
void WriteTestPairs(const std::vector<TestClass>& classes, const std::string& path);

}  // namespace lcl::sampler
