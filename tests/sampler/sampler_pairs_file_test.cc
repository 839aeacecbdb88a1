// Reading and writing the official pairs files: the real train900_pairs.jsonl, round trips, and the
// errors.
#include <gtest/gtest.h>

#include <set>

#include "cluster/errors.h"
#include "sampler/pairs_file.h"
#include "sampler/templates.h"
#include "tests/sampler/test_util.h"

namespace lcl::sampler {
namespace {

using testing::SharedData;
using testing::TempDir;
using testing::WriteText;

const char* kLineA = R"({"class_id": "1", "class_name": "kit fox", "samples": ["train/a/1.JPEG", "train/a/2.JPEG"], )"
                     R"("neighbors": [["2", "weasel", "train/b/1.JPEG"]]})";
const char* kLineB = R"({"class_id": "2", "class_name": "weasel", "samples": ["train/b/1.JPEG", "val/v.JPEG"], )"
                     R"("neighbors": [["1", "kit fox", "train/a/2.JPEG"]]})";

std::string ErrorOf(const std::string& path) {
  return testing::ErrorOf<DataError>([&] { PairsTable::Read(path); });
}

TEST(PairsFile, RealTrain900FileParsesWith900ClassesAnd63559Images) {
  PairsTable table = PairsTable::Read(SharedData("train900_pairs.jsonl"));
  ASSERT_EQ(table.size(), 900u);
  EXPECT_EQ(table.DistinctImageCount(), 63559u);
  const ClassPairs& first = table.classes()[0];
  EXPECT_EQ(first.class_id, "1");
  EXPECT_EQ(first.class_name, "kit fox");
  EXPECT_EQ(first.samples.size(), 36u);
  ASSERT_EQ(first.neighbors.size(), 36u);
  EXPECT_EQ(first.neighbors[0].class_id, "48");
  EXPECT_EQ(first.neighbors[0].class_name, "weasel");
  // The resolved neighbour is the line whose class_id is "48".
  EXPECT_EQ(table.classes()[table.NeighborIndex(0, 0)].class_id, "48");
  std::set<std::string> ids;
  for (const ClassPairs& c : table.classes()) ids.insert(c.class_id);
  EXPECT_EQ(ids.size(), 900u);
}

TEST(PairsFile, WriteThenReadGivesTheSameTable) {
  TempDir dir;
  WriteText(dir.path() + "/in.jsonl", std::string(kLineA) + "\n\n" + kLineB + "\n");
  PairsTable a = PairsTable::Read(dir.path() + "/in.jsonl");
  a.Write(dir.path() + "/out.jsonl");
  PairsTable b = PairsTable::Read(dir.path() + "/out.jsonl");
  ASSERT_EQ(b.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(a.classes()[i].class_id, b.classes()[i].class_id);
    EXPECT_EQ(a.classes()[i].samples, b.classes()[i].samples);
    ASSERT_EQ(b.classes()[i].neighbors.size(), 1u);
    EXPECT_EQ(a.classes()[i].neighbors[0].image_path, b.classes()[i].neighbors[0].image_path);
  }
  EXPECT_EQ(b.NeighborIndex(0, 0), 1);
  EXPECT_EQ(b.DistinctImageCount(), 4u);
}

TEST(PairsFile, RealFileRoundTripsByteForByteInContent) {
  TempDir dir;
  PairsTable a = PairsTable::Read(SharedData("train900_pairs.jsonl"));
  a.Write(dir.path() + "/copy.jsonl");
  PairsTable b = PairsTable::Read(dir.path() + "/copy.jsonl");
  ASSERT_EQ(b.size(), a.size());
  EXPECT_EQ(b.DistinctImageCount(), 63559u);
  EXPECT_EQ(b.classes()[899].neighbors[35].image_path, a.classes()[899].neighbors[35].image_path);
}

TEST(PairsFile, MalformedJsonNamesTheLine) {
  TempDir dir;
  WriteText(dir.path() + "/p.jsonl", std::string(kLineA) + "\n" + kLineB + "\n{\"class_id\": \"3\", oops\n");
  std::string msg = ErrorOf(dir.path() + "/p.jsonl");
  EXPECT_NE(msg.find("p.jsonl:3:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("not valid JSON"), std::string::npos) << msg;
}

TEST(PairsFile, WrongFieldTypeNamesLineFieldExpectedAndFound) {
  TempDir dir;
  WriteText(
      dir.path() + "/p.jsonl",
      std::string(kLineA) + "\n" + R"({"class_id": "2", "class_name": "weasel", "samples": "x", "neighbors": []})");
  std::string msg = ErrorOf(dir.path() + "/p.jsonl");
  EXPECT_NE(msg.find("p.jsonl:2:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("\"samples\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected an array, found string"), std::string::npos) << msg;
}

TEST(PairsFile, MissingFieldAndBadNeighbourEntryAreNamed) {
  TempDir dir;
  WriteText(dir.path() + "/a.jsonl", R"({"class_id": "1", "samples": [], "neighbors": []})");
  std::string msg = ErrorOf(dir.path() + "/a.jsonl");
  EXPECT_NE(msg.find("a.jsonl:1: field \"class_name\": missing"), std::string::npos) << msg;
  WriteText(dir.path() + "/b.jsonl",
            R"({"class_id": "1", "class_name": "x", "samples": ["a"], "neighbors": [["2", "y"]]})");
  msg = ErrorOf(dir.path() + "/b.jsonl");
  EXPECT_NE(msg.find("b.jsonl:1: field \"neighbors\": element 0"), std::string::npos) << msg;
}

TEST(PairsFile, UnknownNeighbourClassIdIsAClearError) {
  TempDir dir;
  std::string bad = kLineB;
  bad.replace(bad.find("[\"1\", \"kit fox\""), 4, "[\"77\"");
  WriteText(dir.path() + "/p.jsonl", std::string(kLineA) + "\n" + bad + "\n");
  std::string msg = ErrorOf(dir.path() + "/p.jsonl");
  EXPECT_NE(msg.find("p.jsonl:2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unknown class_id \"77\""), std::string::npos) << msg;
}

TEST(PairsFile, DuplicateClassAndMissingFileAreErrors) {
  TempDir dir;
  WriteText(dir.path() + "/p.jsonl", std::string(kLineA) + "\n" + kLineA + "\n");
  EXPECT_NE(ErrorOf(dir.path() + "/p.jsonl").find("duplicate class_id"), std::string::npos);
  EXPECT_NE(ErrorOf(dir.path() + "/none.jsonl").find("cannot open"), std::string::npos);
}

TEST(TestPairs, ReadsPairsAndRejectsAnOddCount) {
  TempDir dir;
  std::vector<TestClass> classes = {{"5", "a", {"c1", "c2"}, {"t1"}}, {"6", "b", {"c3"}, {"t2", "t3"}}};
  WriteTestPairs(classes, dir.path() + "/t.jsonl");
  std::vector<TestClass> back = ReadTestPairs(dir.path() + "/t.jsonl");
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[1].test_samples, (std::vector<std::string>{"t2", "t3"}));
  classes.pop_back();
  WriteTestPairs(classes, dir.path() + "/odd.jsonl");
  EXPECT_THROW(ReadTestPairs(dir.path() + "/odd.jsonl"), DataError);
}

// The data README says 68; the published file holds 66 entries (44 distinct). The file is the
// reference: duplicates are kept, so uniform draws over the list match the official sampling.
TEST(Templates, OfficialIclJsonLoadsAll66TemplatesEachWithOneImage) {
  std::vector<std::string> t = LoadTemplates(SharedData("ICL.json"));
  ASSERT_EQ(t.size(), 66u);
  for (const std::string& s : t) EXPECT_NE(s.find("<image>"), std::string::npos) << s;
  EXPECT_EQ(t[0], "Based on the previous examples, what do you think is in the image <image>?");
}

TEST(Templates, TemplateWithoutImageNamesTheElement) {
  TempDir dir;
  WriteText(dir.path() + "/t.json", R"(["what is <image>?", "no marker here"])");
  testing::ExpectErrorMentions<DataError>([&] { LoadTemplates(dir.path() + "/t.json"); }, {"element 1"});
  for (const std::string& s : DefaultTemplates()) EXPECT_NE(s.find("<image>"), std::string::npos);
}

TEST(PairsFile, AMissingFileIsReportedWithTheOfficialFileOfItsKind) {
  TempDir dir;
  const std::string train = ErrorOf(dir.path() + "/none.jsonl");
  EXPECT_NE(train.find("train900_pairs.jsonl"), std::string::npos) << train;
  const std::string test = testing::ErrorOf<DataError>([&] { ReadTestPairs(dir.path() + "/none.jsonl"); });
  EXPECT_NE(test.find("cannot open test pairs file " + dir.path() + "/none.jsonl"), std::string::npos) << test;
  EXPECT_NE(test.find("test100_pairs.jsonl"), std::string::npos) << test;
  EXPECT_EQ(test.find("train900"), std::string::npos) << test;
}

}  // namespace
}  // namespace lcl::sampler
