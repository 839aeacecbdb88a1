// Held-out classes of an index (from WriteIndexJson, as `lcl data index --split` writes it) as 2-way evaluation
// pairs: pairing order, support/query images with and without val images, odd counts, and the errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>

#include "cluster/errors.h"
#include "sampler/class_index.h"
#include "sampler/episode.h"
#include "sampler/held_out_pairs.h"
#include "tests/sampler/test_util.h"

namespace lcl::sampler {
namespace {

using testing::TempDir;
using testing::WriteText;

// Classes n1..n<classes> (ids 1..), `images` train files each (empty files: the index only lists them).
void MakeTree(const std::string& root, int classes, int images) {
  std::string mapping;
  for (int c = 1; c <= classes; ++c) {
    const std::string wnid = "n" + std::to_string(c);
    mapping += wnid + " class" + std::to_string(c) + " name, synonym\n";
    for (int i = 0; i < images; ++i)
      WriteText(root + "/train/" + wnid + "/" + wnid + "_" + std::to_string(i) + ".JPEG", "");
  }
  WriteText(root + "/LOC_synset_mapping.txt", mapping);
}

std::string MakeIndex(const std::string& root, const std::vector<int>& test_ids, const std::string& out) {
  ImageNetIndex index = IndexImageNetRoot(root, {});
  ClassSplit split;
  split.test_ids = test_ids;
  for (const ClassImages& c : index.classes) {
    if (std::find(test_ids.begin(), test_ids.end(), c.synset.id) == test_ids.end())
      split.train_ids.push_back(c.synset.id);
  }
  WriteIndexJson(index, split, out);
  return out;
}

std::string ErrorOf(const std::string& index, const std::string& image_root = "") {
  return testing::ErrorOf<DataError>([&] { ReadHeldOutPairs(index, image_root); });
}

TEST(HeldOutPairs, TestClassesPairInTheIndexOrderWithHalfTheTrainImagesAsSupport) {
  TempDir dir;
  MakeTree(dir.path() + "/root", 6, 5);
  const std::string index = MakeIndex(dir.path() + "/root", {2, 3, 5, 6}, dir.path() + "/index.json");
  HeldOutPairs p = ReadHeldOutPairs(index, "");
  EXPECT_EQ(p.image_root, dir.path() + "/root");  // the index's root
  ASSERT_EQ(p.classes.size(), 4u);
  EXPECT_EQ(p.classes[0].class_id, "2");
  EXPECT_EQ(p.classes[1].class_id, "3");
  EXPECT_EQ(p.classes[3].class_id, "6");
  EXPECT_EQ(p.classes[0].class_name, "class2 name");
  EXPECT_TRUE(p.dropped_class_id.empty());
  // Sorted train images: the first half (2 of 5) support, the rest queries.
  EXPECT_EQ(p.classes[0].context_samples, (std::vector<std::string>{"train/n2/n2_0.JPEG", "train/n2/n2_1.JPEG"}));
  EXPECT_EQ(p.classes[0].test_samples,
            (std::vector<std::string>{"train/n2/n2_2.JPEG", "train/n2/n2_3.JPEG", "train/n2/n2_4.JPEG"}));

  // The pairs feed the ImageNet-100 episodes: class 2k's queries against class 2k+1's support.
  EvalEpisodes episodes(p.classes, 2, 7, EvalLabels::kClassNames);
  ASSERT_EQ(episodes.size(), 12u);
  Episode e = episodes.Build(0);
  EXPECT_EQ(e.query.path, "train/n2/n2_2.JPEG");
  EXPECT_EQ(e.positive_label, "class2 name");
  EXPECT_EQ(e.negative_label, "class3 name");
  for (const ExampleTurn& t : e.examples) {
    const auto& support = p.classes[t.positive ? 0 : 1].context_samples;
    EXPECT_NE(std::find(support.begin(), support.end(), t.image.path), support.end()) << t.image.path;
  }
  EXPECT_EQ(episodes.Build(3).negative_label, "class2 name");  // class 3's first query, partner class 2
}

TEST(HeldOutPairs, ValImagesAreTheQueriesWhenPresent) {
  TempDir dir;
  const std::string root = dir.path() + "/root";
  MakeTree(root, 3, 3);
  WriteText(root + "/val/n1/v1.JPEG", "");
  WriteText(root + "/val/n2/v2.JPEG", "");
  HeldOutPairs p = ReadHeldOutPairs(MakeIndex(root, {1, 2}, dir.path() + "/index.json"), "");
  ASSERT_EQ(p.classes.size(), 2u);
  EXPECT_EQ(p.classes[0].context_samples.size(), 3u);  // every train image
  EXPECT_EQ(p.classes[0].test_samples, (std::vector<std::string>{"val/n1/v1.JPEG"}));
}

TEST(HeldOutPairs, AnOddLastClassIsLeftOutAndNamed) {
  TempDir dir;
  MakeTree(dir.path() + "/root", 5, 2);
  HeldOutPairs p = ReadHeldOutPairs(MakeIndex(dir.path() + "/root", {1, 2, 4}, dir.path() + "/i.json"), "");
  ASSERT_EQ(p.classes.size(), 2u);
  EXPECT_EQ(p.dropped_class_id, "4");
}

TEST(HeldOutPairs, ImageRootOverridesTheIndexRoot) {
  TempDir dir;
  MakeTree(dir.path() + "/root", 4, 2);
  const std::string index = MakeIndex(dir.path() + "/root", {1, 2}, dir.path() + "/index.json");
  std::filesystem::rename(dir.path() + "/root", dir.path() + "/moved");
  EXPECT_NE(ErrorOf(index).find("is not a directory; set eval.image_root"), std::string::npos) << ErrorOf(index);
  EXPECT_EQ(ReadHeldOutPairs(index, dir.path() + "/moved").classes.size(), 2u);
}

TEST(HeldOutPairs, BadIndexesAndClassesAreErrorsNamingTheIndex) {
  TempDir dir;
  const std::string root = dir.path() + "/root";
  MakeTree(root, 4, 2);
  WriteText(dir.path() + "/notjson.json", "{\"split\": ");
  EXPECT_NE(ErrorOf(dir.path() + "/notjson.json").find("notjson.json: not a JSON object"), std::string::npos);
  WriteText(dir.path() + "/nosplit.json", "{\"root\": \"" + root + "\", \"classes\": []}");
  EXPECT_NE(ErrorOf(dir.path() + "/nosplit.json").find("no \"split\""), std::string::npos);
  EXPECT_NE(ErrorOf(dir.path() + "/absent.json").find("cannot open index"), std::string::npos);
  // Fewer than two held-out classes.
  const std::string one = MakeIndex(root, {3}, dir.path() + "/one.json");
  EXPECT_NE(ErrorOf(one).find("needs at least 2"), std::string::npos) << ErrorOf(one);
  // A held-out class with a single image and no val images has no query to ask.
  WriteText(root + "/train/n5/n5_0.JPEG", "");
  WriteText(root + "/LOC_synset_mapping.txt", "n1 class1\nn2 class2\nn3 class3\nn4 class4\nn5 lonely\n");
  const std::string lonely = MakeIndex(root, {4, 5}, dir.path() + "/lonely.json");
  const std::string e = ErrorOf(lonely);
  EXPECT_NE(e.find("lonely.json: held-out class 5 (n5, lonely) has 1 train and 0 val images"), std::string::npos) << e;
  // A tree without the index's class folder: the index was made from another tree.
  std::filesystem::remove_all(root + "/train/n5");
  WriteText(root + "/LOC_synset_mapping.txt", "n1 class1\nn2 class2\nn3 class3\nn4 class4\n");
  const std::string other = ErrorOf(lonely);
  EXPECT_NE(other.find("held-out class 5 (n5) has no train/n5 folder"), std::string::npos) << other;
}

}  // namespace
}  // namespace lcl::sampler
