// ImageNet root indexing: synset mapping, train/ and both val/ layouts, errors, and the class
// split.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "cluster/errors.h"
#include "sampler/class_index.h"
#include "tests/sampler/test_util.h"

namespace lcl::sampler {
namespace {

using testing::TempDir;
using testing::WriteText;

// A tiny ImageNet tree: 3 classes, train images (empty files suffice for indexing), flat val with a
// CSV.
void MakeTree(const std::string& root) {
  WriteText(root + "/LOC_synset_mapping.txt",
            "n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\nn01484850 great "
            "white shark\n");
  for (const char* f : {"n01440764/n01440764_1.JPEG", "n01440764/n01440764_2.JPEG", "n01443537/n01443537_7.JPEG",
                        "n01440764/notes.txt"}) {
    WriteText(root + "/train/" + f, "");
  }
  std::filesystem::create_directories(root + "/train/n01484850");
  WriteText(root + "/val/ILSVRC2012_val_00000001.JPEG", "");
  WriteText(root + "/val/ILSVRC2012_val_00000002.JPEG", "");
  WriteText(root + "/LOC_val_solution.csv",
            "ImageId,PredictionString\nILSVRC2012_val_00000001,n01443537 1 2 3 4 n01443537 5 6 7 8\n"
            "ILSVRC2012_val_00000002,n01484850 1 2 3 4\n");
}

TEST(SynsetMapping, IdsAreOneBasedLineOrderAndNameIsTheFirstSynonym) {
  TempDir dir;
  MakeTree(dir.path());
  auto s = ReadSynsetMapping(dir.path() + "/LOC_synset_mapping.txt");
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[0].id, 1);
  EXPECT_EQ(s[0].wnid, "n01440764");
  EXPECT_EQ(s[0].name, "tench");
  EXPECT_EQ(s[0].full_name, "tench, Tinca tinca");
  EXPECT_EQ(s[2].id, 3);
  EXPECT_EQ(s[2].name, "great white shark");
}

TEST(SynsetMapping, DuplicateAndMalformedLinesNameTheLine) {
  TempDir dir;
  WriteText(dir.path() + "/m.txt", "n1 a\nn2 b\nn1 c\n");
  testing::ExpectErrorMentions<DataError>([&] { ReadSynsetMapping(dir.path() + "/m.txt"); },
                                          {"m.txt:3: wnid n1 already listed on line 1"});
  WriteText(dir.path() + "/m.txt", "n1 a\njustoneword\n");
  EXPECT_THROW(ReadSynsetMapping(dir.path() + "/m.txt"), DataError);
}

TEST(ImageNetIndex, IndexesTrainAndFlatValWithSolutionCsv) {
  TempDir dir;
  MakeTree(dir.path());
  ImageNetIndex index = IndexImageNetRoot(dir.path(), {});
  ASSERT_EQ(index.classes.size(), 3u);
  EXPECT_EQ(index.classes[0].train,
            (std::vector<std::string>{"train/n01440764/n01440764_1.JPEG", "train/n01440764/n01440764_2.JPEG"}));
  EXPECT_EQ(index.classes[1].val, (std::vector<std::string>{"val/ILSVRC2012_val_00000001.JPEG"}));
  EXPECT_EQ(index.classes[2].val, (std::vector<std::string>{"val/ILSVRC2012_val_00000002.JPEG"}));
  EXPECT_EQ(index.num_train, 3u);  // notes.txt is not an image
  EXPECT_EQ(index.num_val, 2u);
}

TEST(ImageNetIndex, ValPerClassFoldersAndNoMappingFile) {
  TempDir dir;
  WriteText(dir.path() + "/train/n2/a.JPEG", "");
  WriteText(dir.path() + "/train/n1/b.JPEG", "");
  WriteText(dir.path() + "/val/n2/c.JPEG", "");
  ImageNetIndex index = IndexImageNetRoot(dir.path(), {});
  ASSERT_EQ(index.classes.size(), 2u);
  EXPECT_EQ(index.classes[0].synset.wnid, "n1");  // sorted folders give the ids
  EXPECT_EQ(index.classes[1].synset.id, 2);
  EXPECT_EQ(index.classes[1].val, (std::vector<std::string>{"val/n2/c.JPEG"}));
}

TEST(ImageNetIndex, ErrorsNameThePathAndReason) {
  TempDir dir;
  testing::ExpectErrorMentions<DataError>([&] { IndexImageNetRoot(dir.path() + "/missing", {}); },
                                          {"has no train/ directory"});
  MakeTree(dir.path());
  WriteText(dir.path() + "/train/n99999999/x.JPEG", "");
  testing::ExpectErrorMentions<DataError>([&] { IndexImageNetRoot(dir.path(), {}); }, {"train/n99999999"});
  std::filesystem::remove_all(dir.path() + "/train/n99999999");
  WriteText(dir.path() + "/LOC_val_solution.csv", "ImageId,PredictionString\nILSVRC2012_val_00000001,n0 1\n");
  EXPECT_THROW(IndexImageNetRoot(dir.path(), {}), DataError);
}

TEST(ImageNetIndex, MissingMappingFileNamesThePath) {
  TempDir dir;
  MakeTree(dir.path());
  IndexOptions options;
  options.synset_path = dir.path() + "/absent_mapping.txt";
  testing::ExpectErrorMentions<DataError>([&] { IndexImageNetRoot(dir.path(), options); }, {"absent_mapping.txt"});
}

TEST(ClassSplit, SeededDisjointAndComplete) {
  ClassSplit a = SplitClasses(1000, 100, 7);
  ClassSplit b = SplitClasses(1000, 100, 7);
  ClassSplit c = SplitClasses(1000, 100, 8);
  EXPECT_EQ(a.test_ids, b.test_ids);
  EXPECT_NE(a.test_ids, c.test_ids);
  ASSERT_EQ(a.test_ids.size(), 100u);
  ASSERT_EQ(a.train_ids.size(), 900u);
  std::vector<int> all = a.train_ids;
  all.insert(all.end(), a.test_ids.begin(), a.test_ids.end());
  std::sort(all.begin(), all.end());
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(all[i], i + 1);
  EXPECT_THROW(SplitClasses(10, 10, 0), ConfigError);
}

TEST(ImageNetIndex, IndexJsonHasCountsAndSplit) {
  TempDir dir;
  MakeTree(dir.path());
  ImageNetIndex index = IndexImageNetRoot(dir.path(), {});
  WriteIndexJson(index, SplitClasses(3, 1, 0), dir.path() + "/index.json");
  nlohmann::json doc = nlohmann::json::parse(std::ifstream(dir.path() + "/index.json"));
  EXPECT_EQ(doc["num_classes"], 3);
  EXPECT_EQ(doc["classes"][0]["train"], 2);
  EXPECT_EQ(doc["classes"][1]["val"], 1);
  EXPECT_EQ(doc["split"]["test"].size(), 1u);
}

}  // namespace
}  // namespace lcl::sampler
