// The class index of an ImageNet-style root: synset mapping (wnid -> 1-based class id and name),
// training images under train/<wnid>/, validation images (flat val/ with a solution CSV, or
// val/<wnid>/), and a seeded train/test class split.
//
//   lcl::sampler::ImageNetIndex index = lcl::sampler::IndexImageNetRoot("/data/imagenet", {});
//   lcl::sampler::WriteIndexJson(index, SplitClasses(index.classes.size(), 100, 0), "index.json");
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lcl::sampler {

// One line of a synset mapping file ("n01440764 tench, Tinca tinca"); id is the 1-based line
// number, as the official pairs files use it.
struct SynsetEntry {
  int id = 0;
  std::string wnid;
  std::string name;       // first synonym ("tench"), the name the official files use
  std::string full_name;  // the whole description ("tench, Tinca tinca")
};

// Reads a synset mapping file. Throws lcl::DataError naming the line on a malformed or duplicate
// entry.
std::vector<SynsetEntry> ReadSynsetMapping(const std::string& path);
void WriteSynsetMapping(const std::vector<SynsetEntry>& entries, const std::string& path);

struct ClassImages {
  SynsetEntry synset;
  std::vector<std::string> train;  // paths relative to the root, sorted
  std::vector<std::string> val;
};

struct IndexOptions {
  std::string synset_path;   // default: <root>/LOC_synset_mapping.txt, else the sorted train/ folders
  std::string val_solution;  // default: <root>/LOC_val_solution.csv when present
  std::vector<std::string> extensions = {".JPEG", ".jpeg", ".jpg", ".JPG", ".png", ".PNG"};
};

struct ImageNetIndex {
  std::string root;
  std::vector<ClassImages> classes;  // in class-id order
  size_t num_train = 0;
  size_t num_val = 0;
};

// Walks the root. Throws lcl::DataError on a missing/unreadable directory (with the OS reason), a
// train/ folder with no synset entry, or a solution CSV line naming an unknown wnid.
ImageNetIndex IndexImageNetRoot(const std::string& root, const IndexOptions& options);

struct ClassSplit {
  std::vector<int> train_ids;  // sorted class ids
  std::vector<int> test_ids;
};

// A seeded split of class ids 1..num_classes with num_test held out (the paper: 900/100).
ClassSplit SplitClasses(size_t num_classes, size_t num_test, uint64_t seed);

// Writes {"root", "num_classes", "num_train", "num_val", "classes": [{id, wnid, name, train, val}],
// "split": {"train": [...], "test": [...]}} with per-class image counts.
void WriteIndexJson(const ImageNetIndex& index, const ClassSplit& split, const std::string& path);

}  // namespace lcl::sampler
