// ISEKAI-style evaluation files: parsing (and the errors of bad lines, with file:line and field) and the
// episodes built from a line at a shot (support sizes, query, labels, determinism).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>

#include "cluster/errors.h"
#include "sampler/isekai.h"
#include "tests/sampler/test_util.h"

namespace lcl::sampler {
namespace {

using testing::TempDir;
using testing::WriteText;

// Line 1: the query is on the positive side. Line 2: label_name names the negative_promt side, lists of 2 and 1.
const char* kLinePositive =
    R"({"image_name": "q/cactus_boxer_q.png", "positive_list": ["p/cb1.png", "p/cb2.png", "p/cb3.png", )"
    R"("p/cb4.png", "p/cb5.png"], "negative_list": ["n/x1.png", "n/x2.png", "n/x3.png", "n/x4.png", "n/x5.png"], )"
    R"("positive_promt": "cactus boxer", "negative_promt": "orange octopus", "label_name": "cactus boxer"})";
const char* kLineNegative =
    R"({"image_name": "q/oo_q.png", "positive_list": ["p/cb1.png", "p/cb2.png"], "negative_list": ["n/oo1.png"], )"
    R"("positive_promt": "cactus boxer", "negative_promt": "orange octopus", "label_name": "Orange Octopus"})";

std::string ErrorOf(const std::string& text) {
  TempDir dir;
  const std::string path = dir.path() + "/isekai.jsonl";
  WriteText(path, text);
  return testing::ErrorOf<DataError>([&] { ReadIsekaiFile(path, ""); });
}

std::string WithKey(const std::string& key, const std::string& value) {  // kLinePositive with one key replaced
  nlohmann::json j = nlohmann::json::parse(kLinePositive);
  if (value.empty()) {
    j.erase(key);
  } else {
    j[key] = nlohmann::json::parse(value);
  }
  return j.dump();
}

TEST(IsekaiFile, ParsesLinesWithTheOfficialKeysAndSkipsBlankLines) {
  TempDir dir;
  WriteText(dir.path() + "/sub/isekai.jsonl", std::string(kLinePositive) + "\n\n" + kLineNegative + "\n");
  IsekaiFile f = ReadIsekaiFile(dir.path() + "/sub/isekai.jsonl", "");
  EXPECT_EQ(f.image_root, dir.path() + "/sub");  // default: the file's directory
  ASSERT_EQ(f.items.size(), 2u);
  EXPECT_EQ(f.items[0].line, 1u);
  EXPECT_EQ(f.items[1].line, 3u);
  EXPECT_EQ(f.items[0].query, "q/cactus_boxer_q.png");
  EXPECT_EQ(f.items[0].positive_list.size(), 5u);
  EXPECT_EQ(f.items[0].positive_prompt, "cactus boxer");
  EXPECT_EQ(f.items[0].negative_prompt, "orange octopus");
  EXPECT_TRUE(f.items[0].query_in_positive);
  EXPECT_FALSE(f.items[1].query_in_positive);  // label_name matched case-insensitively
  EXPECT_EQ(ReadIsekaiFile(dir.path() + "/sub/isekai.jsonl", "/images").image_root, "/images");
}

TEST(IsekaiFile, MalformedLineNamesFileAndLine) {
  const std::string e = ErrorOf(std::string(kLinePositive) + "\n{\"image_name\": \"a.png\", \n");
  EXPECT_NE(e.find("isekai.jsonl:2: not valid JSON"), std::string::npos) << e;
}

TEST(IsekaiFile, MissingKeyNamesLineAndField) {
  const std::string e = ErrorOf(std::string(kLineNegative) + "\n" + WithKey("negative_promt", "") + "\n");
  EXPECT_NE(e.find("isekai.jsonl:2: field \"negative_promt\": missing"), std::string::npos) << e;
  const std::string e2 = ErrorOf(WithKey("label_name", "") + "\n");
  EXPECT_NE(e2.find(":1: field \"label_name\": missing"), std::string::npos) << e2;
}

TEST(IsekaiFile, EmptyListNamesLineAndField) {
  const std::string e = ErrorOf(WithKey("positive_list", "[]") + "\n");
  EXPECT_NE(e.find("isekai.jsonl:1: field \"positive_list\": is empty"), std::string::npos) << e;
}

TEST(IsekaiFile, WrongTypesAndUnanswerableLabelsAreErrors) {
  EXPECT_NE(ErrorOf(WithKey("negative_list", "\"n/x1.png\"") + "\n").find("field \"negative_list\": expected an array"),
            std::string::npos);
  EXPECT_NE(ErrorOf(WithKey("positive_list", "[\"a.png\", 3]") + "\n").find("element 1: expected a string"),
            std::string::npos);
  EXPECT_NE(ErrorOf(WithKey("image_name", "\"\"") + "\n").find("field \"image_name\": is empty"), std::string::npos);
  const std::string neither = ErrorOf(WithKey("label_name", "\"kit fox\"") + "\n");
  EXPECT_NE(neither.find(":1: field \"label_name\": 'kit fox' is neither positive_promt"), std::string::npos)
      << neither;
  EXPECT_NE(ErrorOf(WithKey("negative_promt", "\"Cactus Boxer\"") + "\n").find("the two labels must differ"),
            std::string::npos);
  EXPECT_NE(ErrorOf("\n\n").find("no ISEKAI lines"), std::string::npos);
  EXPECT_THROW(ReadIsekaiFile("/nonexistent/isekai.jsonl", ""), DataError);
}

class IsekaiEpisodesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WriteText(dir_.path() + "/isekai.jsonl", std::string(kLinePositive) + "\n" + kLineNegative + "\n");
    file_ = ReadIsekaiFile(dir_.path() + "/isekai.jsonl", "");
  }
  TempDir dir_;
  IsekaiFile file_;
};

TEST_F(IsekaiEpisodesTest, SupportIsTheFirstShotImagesOfEachListUnderTheirLabels) {
  IsekaiEpisodes episodes(file_, 3, 7);
  ASSERT_EQ(episodes.size(), 2u);
  Episode e = episodes.Build(0);
  EXPECT_EQ(e.policy, "2way_isekai");
  EXPECT_EQ(e.shot, 3);
  EXPECT_EQ(e.query.path, "q/cactus_boxer_q.png");
  EXPECT_TRUE(e.query_positive);
  EXPECT_EQ(e.query_label, "cactus boxer");
  EXPECT_EQ(e.positive_label, "cactus boxer");
  EXPECT_EQ(e.negative_label, "orange octopus");
  std::set<std::string> pos, neg;
  for (const ExampleTurn& t : e.examples) {
    (t.positive ? pos : neg).insert(t.image.path);
    EXPECT_EQ(t.label, t.positive ? "cactus boxer" : "orange octopus");
  }
  EXPECT_EQ(pos, (std::set<std::string>{"p/cb1.png", "p/cb2.png", "p/cb3.png"}));
  EXPECT_EQ(neg, (std::set<std::string>{"n/x1.png", "n/x2.png", "n/x3.png"}));
  EXPECT_FALSE(e.question.empty());
  EXPECT_EQ(episodes.short_lines(), 1u);  // line 2 has 2 and 1 images
}

TEST_F(IsekaiEpisodesTest, QueryOnTheNegativeListSideMakesThatSideThePositiveOne) {
  Episode e = IsekaiEpisodes(file_, 2, 7).Build(1);
  EXPECT_EQ(e.positive_label, "orange octopus");  // the prompt's spelling, not label_name's
  EXPECT_EQ(e.negative_label, "cactus boxer");
  EXPECT_EQ(e.query_label, "orange octopus");
  int pos = 0, neg = 0;
  for (const ExampleTurn& t : e.examples) {
    if (t.positive) {
      ++pos;
      EXPECT_EQ(t.image.path, "n/oo1.png");  // negative_list holds the query's class
    } else {
      ++neg;
    }
  }
  EXPECT_EQ(pos, 1);  // a short list gives what it has
  EXPECT_EQ(neg, 2);
  EXPECT_EQ(e.shot, 2);
  // Pools for bad-image replacement follow the sides.
  EXPECT_EQ(IsekaiEpisodes(file_, 2, 7).Pool(e.query.class_pos), file_.items[1].negative_list);
  EXPECT_EQ(IsekaiEpisodes(file_, 2, 7).Pool(e.negative_class), file_.items[1].positive_list);
}

TEST_F(IsekaiEpisodesTest, ZeroShotHasOnlyTheQueryAndShotPastTheListsUsesThemWhole) {
  EXPECT_TRUE(IsekaiEpisodes(file_, 0, 7).Build(0).examples.empty());
  EXPECT_EQ(IsekaiEpisodes(file_, 0, 7).short_lines(), 0u);
  Episode e = IsekaiEpisodes(file_, 16, 7).Build(0);
  EXPECT_EQ(e.examples.size(), 10u);
  EXPECT_EQ(e.shot, 5);
  EXPECT_EQ(IsekaiEpisodes(file_, 16, 7).short_lines(), 2u);
}

TEST_F(IsekaiEpisodesTest, TheQueryIsNeverItsOwnExample) {
  file_.items[0].positive_list.insert(file_.items[0].positive_list.begin(), "q/./cactus_boxer_q.png");
  Episode e = IsekaiEpisodes(file_, 2, 7).Build(0);
  for (const ExampleTurn& t : e.examples) EXPECT_NE(t.image.path, "q/./cactus_boxer_q.png");
  EXPECT_EQ(e.examples.size(), 4u);
}

TEST_F(IsekaiEpisodesTest, EpisodesAreAPureFunctionOfSeedShotAndLine) {
  auto order = [](const Episode& e) {
    std::vector<std::string> v;
    for (const ExampleTurn& t : e.examples) v.push_back(t.image.path);
    return v;
  };
  IsekaiEpisodes a(file_, 5, 7), b(file_, 5, 7);
  EXPECT_EQ(order(a.Build(0)), order(b.Build(0)));
  EXPECT_EQ(a.Build(0).question, b.Build(0).question);
  bool differs = false;  // another seed shuffles differently (checked over a few seed pairs)
  for (int k = 0; k < 8 && !differs; ++k) {
    differs = order(IsekaiEpisodes(file_, 5, 7 + k).Build(0)) != order(IsekaiEpisodes(file_, 5, 100 + k).Build(0));
  }
  EXPECT_TRUE(differs);
  // The support really is shuffled: positive and negative turns interleave for some seed.
  bool interleaved = false;
  for (uint64_t seed = 0; seed < 8 && !interleaved; ++seed) {
    Episode e = IsekaiEpisodes(file_, 5, seed).Build(0);
    interleaved = !e.examples.front().positive || e.examples[4].positive;
  }
  EXPECT_TRUE(interleaved);
  EXPECT_THROW(a.Build(2), ConfigError);
  EXPECT_THROW(IsekaiEpisodes(file_, -1, 7), ConfigError);
}

}  // namespace
}  // namespace lcl::sampler
