// How a generated answer is scored, the official rule (plain substrings) against lcl's (whole words, nested labels
// told apart): case, one label inside the other, and labels holding "'", "." or "-".
#include <gtest/gtest.h>

#include "trainer/evaluator.h"

namespace lcl::trainer {
namespace {

constexpr AnswerMetric kOfficial = AnswerMetric::kOfficial;
constexpr AnswerMetric kLcl = AnswerMetric::kLcl;

TEST(AnswerMetric, BothIgnoreCase) {
  for (AnswerMetric m : {kOfficial, kLcl}) {
    EXPECT_TRUE(AnswerIsCorrect("There is \"Kit Fox\" in the image.", "kit fox", "red fox", m));
    EXPECT_FALSE(AnswerIsCorrect("there is \"RED FOX\" in the image.", "kit fox", "red fox", m));
  }
}

TEST(AnswerMetric, NamingBothOrNeitherIsWrong) {
  for (AnswerMetric m : {kOfficial, kLcl}) {
    EXPECT_FALSE(AnswerIsCorrect("a dog or a cat", "cat", "dog", m));
    EXPECT_FALSE(AnswerIsCorrect("a horse", "cat", "dog", m));
  }
}

TEST(AnswerMetric, NestedLabelsTheOfficialRuleScoresWrongLclScoresRight) {
  // The right answer contains the other label: the official rule calls it wrong.
  EXPECT_FALSE(AnswerIsCorrect("there is \"wildcat\" in the image.", "wildcat", "cat", kOfficial));
  EXPECT_TRUE(AnswerIsCorrect("there is \"wildcat\" in the image.", "wildcat", "cat", kLcl));
  // The positive inside the negative: answering the negative is wrong under both.
  EXPECT_FALSE(AnswerIsCorrect("there is \"wildcat\" in the image.", "cat", "wildcat", kOfficial));
  EXPECT_FALSE(AnswerIsCorrect("there is \"wildcat\" in the image.", "cat", "wildcat", kLcl));
  EXPECT_TRUE(AnswerIsCorrect("there is \"cat\" in the image.", "cat", "wildcat", kLcl));
  // Multi-word nesting.
  EXPECT_TRUE(AnswerIsCorrect("it is a great white shark", "great white shark", "white shark", kLcl));
  EXPECT_FALSE(AnswerIsCorrect("it is a great white shark", "great white shark", "white shark", kOfficial));
}

TEST(AnswerMetric, ALabelInsideAnotherWordIsNotNamedUnderLcl) {
  // "tomcat" is not the label "cat"; the official rule counts it.
  EXPECT_TRUE(AnswerIsCorrect("a tomcat", "cat", "dog", kOfficial));
  EXPECT_FALSE(AnswerIsCorrect("a tomcat", "cat", "dog", kLcl));
  EXPECT_TRUE(AnswerIsCorrect("a cat.", "cat", "dog", kLcl));  // punctuation ends a word
  EXPECT_TRUE(AnswerIsCorrect("\"cat\"", "cat", "dog", kLcl));
}

TEST(AnswerMetric, LabelsWithApostrophesDotsAndHyphensMatchWhole) {
  EXPECT_TRUE(AnswerIsCorrect("there is \"jack-o'-lantern\" in the image.", "jack-o'-lantern", "lantern", kLcl));
  EXPECT_FALSE(AnswerIsCorrect("there is \"lantern\" in the image.", "jack-o'-lantern", "lantern", kLcl));
  EXPECT_TRUE(AnswerIsCorrect("it's a st. bernard", "St. Bernard", "bernese mountain dog", kLcl));
  EXPECT_TRUE(AnswerIsCorrect("it's a st. bernard", "St. Bernard", "bernese mountain dog", kOfficial));
  // A label ending in "." is not split by the sentence's own full stop.
  EXPECT_TRUE(AnswerIsCorrect("the answer is u.s. mail.", "u.s. mail", "mailbox", kLcl));
}

TEST(AnswerMetric, EqualLabelsAreNeverRight) {
  EXPECT_FALSE(AnswerIsCorrect("cat", "cat", "cat", kLcl));
  EXPECT_FALSE(AnswerIsCorrect("cat", "cat", "cat", kOfficial));
}

}  // namespace
}  // namespace lcl::trainer
