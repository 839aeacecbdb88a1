// Prompt rendering and SentencePiece tokenization: the official layout, image blocks as specials
// text can never produce, a label mask whose decoded runs are exactly the answers, and the
// max-length policy.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "cluster/errors.h"
#include "sampler/episode.h"
#include "sampler/prompt.h"
#include "sampler/tokenizer.h"
#include "tests/sampler/test_util.h"

namespace lcl::sampler {
namespace {

const PairsTable& RealTable() {
  static const PairsTable table = PairsTable::Read(testing::SharedData("train900_pairs.jsonl"));
  return table;
}

std::vector<std::string> ClassNames() {
  std::vector<std::string> names;
  for (const ClassPairs& c : RealTable().classes()) names.push_back(c.class_name);
  return names;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// One tokenizer for the whole binary (training takes about a second).
class PromptTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    TrainTokenizer(DefaultTokenizerCorpus(ClassNames()), 1000, dir_->path() + "/tok.model");
    tok_ = new Tokenizer(Tokenizer::Load(dir_->path() + "/tok.model"));
  }
  static void TearDownTestSuite() {
    delete tok_;
    delete dir_;
  }
  static testing::TempDir* dir_;
  static Tokenizer* tok_;
};
testing::TempDir* PromptTest::dir_ = nullptr;
Tokenizer* PromptTest::tok_ = nullptr;

TEST_F(PromptTest, TrainingIsDeterministic) {
  // Same corpus, same file name (the model records its prefix), another directory: identical bytes.
  testing::TempDir other;
  TrainTokenizer(DefaultTokenizerCorpus(ClassNames()), 1000, other.path() + "/tok.model");
  const std::string a = ReadAll(dir_->path() + "/tok.model"), b = ReadAll(other.path() + "/tok.model");
  EXPECT_GT(a.size(), 1000u);
  EXPECT_TRUE(a.substr(0, a.find("/tmp/")) == b.substr(0, b.find("/tmp/"))) << "models differ";
  EXPECT_TRUE(a.substr(a.find("/tok")) == b.substr(b.find("/tok"))) << "models differ after the prefix";
  EXPECT_THROW(TrainTokenizer({}, 1000, dir_->path() + "/x.model"), DataError);
  EXPECT_THROW(TrainTokenizer({"a"}, 1000, dir_->path() + "/x.bin"), ConfigError);
  EXPECT_THROW(Tokenizer::Load(dir_->path() + "/absent.model"), DataError);
}

TEST_F(PromptTest, ImageSpecialsFollowTheVocabularyAndTextNeverProducesThem) {
  const Tokenizer& tok = *tok_;
  EXPECT_EQ(tok.im_start_id(), tok.vocab_size() - 3);
  EXPECT_EQ(tok.im_patch_id(), tok.vocab_size() - 1);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_EQ(tok.pad_id(), 3);
  for (const std::string& text : {std::string("<image> <im_start> <im_patch> </s> <s>"), std::string("\xff\xfe"),
                                  std::string("Ünïcödé 漢字 [BEGIN EXAMPLE]")}) {
    for (int id : tok.Encode(text)) ASSERT_LT(id, tok.im_start_id()) << text;
  }
  // Byte fallback: text outside the corpus round-trips exactly.
  EXPECT_EQ(tok.Decode(tok.Encode("Ünïcödé 漢字 qzxv")), "Ünïcödé 漢字 qzxv");
}

TEST_F(PromptTest, RenderedTextFollowsTheVicunaLayout) {
  Episode e = TrainEpisodes(RealTable(), EpisodeConfig{}).Build(0, 3);
  PromptConfig config;
  std::string text = RenderText(e, config);
  EXPECT_EQ(
      text.rfind(config.system + " USER: [BEGIN EXAMPLE] What is in the image <image>? ASSISTANT: there is \"", 0), 0u);
  size_t examples = 0;
  for (size_t p = text.find("[END EXAMPLE]</s>"); p != std::string::npos; p = text.find("[END EXAMPLE]</s>", p + 1)) {
    ++examples;
  }
  EXPECT_EQ(examples, 32u);
  std::string tail = "USER: " + e.question + " ASSISTANT: there is \"" + e.query_label + "\" in the image.</s>";
  EXPECT_EQ(text.substr(text.size() - tail.size()), tail);
  EXPECT_EQ(text.find(config.system, 1), std::string::npos);  // the system line only once, first
}

TEST_F(PromptTest, DecodedUnmaskedTokensAreExactlyTheAnswers) {
  const Tokenizer& tok = *tok_;
  PromptConfig config;
  config.image_tokens = 16;
  config.max_length = 100000;
  TrainEpisodes episodes(RealTable(), EpisodeConfig{});
  for (uint64_t i = 0; i < 20; ++i) {
    Episode e = episodes.Build(1, i);
    TokenizedPrompt p = TokenizeEpisode(e, tok, config);
    ASSERT_EQ(p.input_ids.size(), p.labels.size());
    std::vector<std::string> answers;
    for (const Turn& t : RenderTurns(e)) answers.push_back(t.assistant);
    // Split the labelled positions into runs; each run is one answer followed by eos.
    std::vector<std::string> decoded;
    std::vector<int> run;
    for (size_t k = 0; k <= p.labels.size(); ++k) {
      bool labelled = k < p.labels.size() && p.labels[k] != kIgnoreIndex;
      if (labelled) {
        ASSERT_EQ(p.labels[k], p.input_ids[k]);
        run.push_back(p.labels[k]);
      } else if (!run.empty()) {
        ASSERT_EQ(run.back(), tok.eos_id());
        decoded.push_back(tok.Decode(run));
        run.clear();
      }
    }
    ASSERT_EQ(decoded, answers);
    // 33 image blocks, each start + 16 patches + end, in the order of p.images, none labelled.
    size_t blocks = 0;
    for (size_t k = 0; k < p.input_ids.size(); ++k) {
      if (p.input_ids[k] != tok.im_start_id()) continue;
      ++blocks;
      for (int j = 1; j <= 16; ++j) ASSERT_EQ(p.input_ids[k + j], tok.im_patch_id());
      ASSERT_EQ(p.input_ids[k + 17], tok.im_end_id());
      for (int j = 0; j <= 17; ++j) ASSERT_EQ(p.labels[k + j], kIgnoreIndex);
    }
    EXPECT_EQ(blocks, 33u);
    ASSERT_EQ(p.images.size(), 33u);
    EXPECT_EQ(p.images.back().path, e.query.path);
    EXPECT_EQ(p.images[0].path, e.examples[0].image.path);
    EXPECT_EQ(p.input_ids[0], tok.bos_id());
  }
}

TEST_F(PromptTest, CompactLayoutIsImageThenLabelWithOnlyTheLabelsLabelled) {
  const Tokenizer& tok = *tok_;
  PromptConfig config;
  config.layout = ParsePromptLayout("compact");
  config.image_tokens = 4;
  config.max_length = 100000;
  EXPECT_THROW(ParsePromptLayout("verbose"), ConfigError);
  Episode e = TrainEpisodes(RealTable(), EpisodeConfig{}).Build(0, 3);
  std::string text = RenderText(e, config);
  EXPECT_EQ(text.rfind("<image> " + e.examples[0].label + "</s><image> ", 0), 0u);
  EXPECT_EQ(text.find("?"), text.rfind("<image> ?") + 8);  // only the query asks
  const std::string tail = "<image> ? " + e.query_label + "</s>";
  EXPECT_EQ(text.substr(text.size() - tail.size()), tail);
  EXPECT_EQ(text.find("USER"), std::string::npos);

  TokenizedPrompt p = TokenizeEpisode(e, tok, config);
  // bos, then per turn: start + 4 patches + end, the label's tokens and eos (the only labelled positions).
  size_t k = 1, turn = 0;
  ASSERT_EQ(p.input_ids[0], tok.bos_id());
  for (const Turn& t : RenderTurns(e, config.layout)) {
    ASSERT_EQ(p.input_ids[k], tok.im_start_id()) << "turn " << turn;
    ASSERT_EQ(p.input_ids[k + 5], tok.im_end_id());
    for (size_t j = k; j <= k + 5; ++j) ASSERT_EQ(p.labels[j], kIgnoreIndex);
    k += 6;
    // The query's " ?" (unlabelled) tells it from the examples.
    const std::string after_image = t.user.substr(std::string("<image>").size());
    ASSERT_EQ(after_image, turn == e.examples.size() ? " ?" : "") << "turn " << turn;
    if (!after_image.empty()) {
      for (int id : tok.Encode(after_image)) {
        ASSERT_EQ(p.input_ids[k], id);
        ASSERT_EQ(p.labels[k], kIgnoreIndex);
        ++k;
      }
    }
    std::vector<int> answer = tok.Encode(t.assistant);
    answer.push_back(tok.eos_id());
    for (int id : answer) {
      ASSERT_EQ(p.input_ids[k], id);
      ASSERT_EQ(p.labels[k], id);
      ++k;
    }
    ++turn;
  }
  EXPECT_EQ(k, p.input_ids.size());
  EXPECT_EQ(turn, e.examples.size() + 1);
  // Without image markers (LLaVA-1.5's layout) an image block is its patch tokens alone.
  PromptConfig bare = config;
  bare.image_markers = false;
  TokenizedPrompt b = TokenizeEpisode(e, tok, bare);
  EXPECT_EQ(b.input_ids.size() + 2 * (e.examples.size() + 1), p.input_ids.size());
  for (int id : b.input_ids) {
    ASSERT_NE(id, tok.im_start_id());
    ASSERT_NE(id, tok.im_end_id());
  }
  EXPECT_EQ(b.input_ids[1], tok.im_patch_id());
  // Far shorter than the official layout of the same episode.
  PromptConfig official = config;
  official.layout = PromptLayout::kOfficial;
  EXPECT_LT(p.input_ids.size() * 2, TokenizeEpisode(e, tok, official).input_ids.size());
}

TEST_F(PromptTest, SupportNamesFollowEachExampleLabelButNeverTheFinalAnswer) {
  PromptConfig config;
  config.layout = PromptLayout::kCompact;
  config.image_tokens = 4;
  config.max_length = 100000;
  config.support_names = true;
  EpisodeConfig both_made_up;
  both_made_up.made_up_negative = 1.0;
  const PairsTable& table = RealTable();
  Episode e = TrainEpisodes(table, both_made_up).Build(0, 5);
  const std::vector<Turn> turns = RenderTurns(e, config.layout, config.support_names);
  ASSERT_EQ(turns.size(), e.examples.size() + 1);
  for (size_t i = 0; i < e.examples.size(); ++i) {
    const ExampleTurn& t = e.examples[i];
    const int cls = t.positive ? e.positive_class : e.negative_class;
    ASSERT_EQ(t.class_name, table.classes()[size_t(cls)].class_name);
    EXPECT_EQ(turns[i].assistant, t.label + " " + t.class_name) << "example " << i;
  }
  EXPECT_EQ(turns.back().assistant, e.query_label);  // the answer is the label alone
  // The names are labelled (the model is trained to say them), and the text carries them.
  TokenizedPrompt named = TokenizeEpisode(e, *tok_, config);
  config.support_names = false;
  TokenizedPrompt plain = TokenizeEpisode(e, *tok_, config);
  size_t name_tokens = 0;
  for (const ExampleTurn& t : e.examples)
    name_tokens += tok_->Encode(t.label + " " + t.class_name).size() - tok_->Encode(t.label).size();
  EXPECT_EQ(named.input_ids.size(), plain.input_ids.size() + name_tokens);
  int64_t labelled_named = 0, labelled_plain = 0;
  for (int l : named.labels) labelled_named += l != kIgnoreIndex;
  for (int l : plain.labels) labelled_plain += l != kIgnoreIndex;
  EXPECT_EQ(labelled_named, labelled_plain + int64_t(name_tokens));

  // The paper's recipe names the neighbour side already: its label is not repeated.
  Episode paper = TrainEpisodes(table, EpisodeConfig{}).Build(0, 5);
  for (const Turn& t : RenderTurns(paper, PromptLayout::kCompact, true)) {
    EXPECT_EQ(t.assistant.find(paper.negative_label + " " + paper.negative_label), std::string::npos);
  }
  // An example without a class name (ISEKAI files have none) is a clear error, not a silent plain prompt.
  e.examples[0].class_name.clear();
  testing::ExpectErrorMentions<DataError>([&] { RenderTurns(e, PromptLayout::kCompact, true); },
                                          {"support_names", e.examples[0].image.path});
}

TEST_F(PromptTest, OverLongEpisodesDropWholeExamplePairsOrAreRejectedWithCounts) {
  const Tokenizer& tok = *tok_;
  PromptConfig config;  // 256 image tokens: 33 images are 8514 tokens, far over 2048
  config.max_length = 2048;
  Episode e = TrainEpisodes(RealTable(), EpisodeConfig{}).Build(0, 0);
  TokenizedPrompt p = TokenizeEpisode(e, tok, config);
  ASSERT_LE(p.input_ids.size(), 2048u);
  EXPECT_LT(p.shot, 16);
  EXPECT_EQ(p.images.size(), 2u * p.shot + 1);
  // The largest shot that fits: one more pair would not.
  Episode bigger = e;
  while (bigger.shot > p.shot + 1) bigger = DropExamplePair(bigger);
  PromptConfig no_reduce = config;
  no_reduce.reduce_shots = false;
  no_reduce.max_length = 1 << 20;
  EXPECT_GT(TokenizeEpisode(bigger, tok, no_reduce).input_ids.size(), 2048u);
  // Balanced sides after reduction.
  Episode reduced = e;
  while (reduced.shot > p.shot) reduced = DropExamplePair(reduced);
  int positives = 0;
  for (const ExampleTurn& t : reduced.examples) positives += t.positive;
  EXPECT_EQ(positives, p.shot);
  EXPECT_EQ(reduced.examples.size(), 2u * p.shot);
  // Reject mode: a clear count.
  config.reduce_shots = false;
  testing::ExpectErrorMentions<DataError>([&] { TokenizeEpisode(e, tok, config); },
                                          {"33 images x 258", "max_length is 2048"});
}

// --- The official conversation (github isekai-portal/Link-Context-Learning), rebuilt here from its rules ---

const char* const kCausal =
    "You should find the causal relationship between the examples I am going to show you. And use that to answer to "
    "the [FINAL QUESTION].";
const char* const kEvalQuestion = "Based on the previous examples, what is in the image <image>?";

// Conversation.get_prompt (mllm/conversation/base_conversation.py) of one [USER question, ASSISTANT answer]
// conversation with roles USER/ASSISTANT, sep " " and sep2 "</s>": ADD_COLON_TWO opens with system + sep, EMPTY
// with sep alone; an empty answer (evaluation's last turn) ends the text with "ASSISTANT:".
std::string GetPrompt(bool empty_style, const std::string& system, const std::string& question,
                      const std::string& answer) {
  std::string ret = empty_style ? std::string(" ") : system + " ";
  ret += "USER: " + question + " ";
  ret += answer.empty() ? std::string("ASSISTANT:") : "ASSISTANT: " + answer + "</s>";
  return ret;
}

// The turns' texts, each as its own tokenizer call sees it: causal_v1.0 (first example), hypnotized_ans_v1.0 (the
// other examples), final_v1.0 (system "[FINAL QUESTION]: ") for the query; `eval` leaves the final answer empty.
std::vector<std::string> OfficialTurnTexts(const Episode& e, bool eval) {
  std::vector<std::string> turns;
  for (size_t i = 0; i < e.examples.size(); ++i) {
    turns.push_back(GetPrompt(/*empty_style=*/i > 0, kCausal, "[BEGIN EXAMPLE] What is in the image <image>?",
                              "there is \"" + e.examples[i].label + "\" in the image. [END EXAMPLE]"));
  }
  turns.push_back(GetPrompt(false, "[FINAL QUESTION]: ", e.question,
                            eval ? std::string() : "there is \"" + e.query_label + "\" in the image."));
  return turns;
}

// __getitem_icl__: every turn tokenized with its bos; the last token (the "</s>") of every turn but the first and
// the last is dropped. As text: "<s>" before each turn, the middle turns' "</s>" cut.
std::string OfficialText(const Episode& e, bool eval) {
  const std::vector<std::string> turns = OfficialTurnTexts(e, eval);
  std::string text;
  for (size_t i = 0; i < turns.size(); ++i) {
    const bool middle = i > 0 && i + 1 < turns.size();
    text += "<s>" + (middle ? turns[i].substr(0, turns[i].size() - 4) : turns[i]);
  }
  return text;
}

// The official (slow LLaMA) tokenizer on one turn's text: bos, then the text split at the no-split tokens ("</s>"
// -> eos; "<image>", replaced by im_start + patches + im_end, with the whitespace on both sides stripped), each
// remaining piece SentencePiece-encoded on its own.
std::vector<int> OfficialTurnIds(const std::string& text, const Tokenizer& tok, int image_tokens) {
  std::vector<int> ids = {tok.bos_id()};
  size_t start = 0;
  bool after_image = false;
  while (true) {
    const size_t img = text.find("<image>", start), eos = text.find("</s>", start);
    const size_t at = std::min(img, eos);
    std::string piece = text.substr(start, at == std::string::npos ? std::string::npos : at - start);
    if (after_image) piece.erase(0, piece.find_first_not_of(' '));
    if (at != std::string::npos && at == img) piece.erase(piece.find_last_not_of(' ') + 1);
    if (!piece.empty()) {
      for (int id : tok.Encode(piece)) ids.push_back(id);
    }
    if (at == std::string::npos) break;
    after_image = at == img;
    if (after_image) {
      ids.push_back(tok.im_start_id());
      ids.insert(ids.end(), image_tokens, tok.im_patch_id());
      ids.push_back(tok.im_end_id());
      start = at + 7;
    } else {
      ids.push_back(tok.eos_id());
      start = at + 4;
    }
  }
  return ids;
}

// A fixed 2-way episode: `shot` examples per side, alternating positive ("zorp") and negative ("kit fox").
Episode FixedEpisode(int shot, const std::string& question) {
  Episode e;
  e.shot = shot;
  e.positive_label = "zorp";
  e.negative_label = "kit fox";
  for (int i = 0; i < 2 * shot; ++i) {
    ExampleTurn t;
    t.positive = i % 2 == 0;
    t.label = t.positive ? e.positive_label : e.negative_label;
    t.class_name = t.positive ? "tabby cat" : "kit fox";
    t.image.path = "train/n" + std::to_string(i) + ".JPEG";
    e.examples.push_back(t);
  }
  e.query.path = "val/q.JPEG";
  e.query_label = "zorp";
  e.question = question;
  return e;
}

PromptConfig OfficialConfig() {
  PromptConfig c;
  c.layout = PromptLayout::kOfficial;
  c.loss_on = LossOn::kFinal;
  c.system = kCausal;
  c.image_tokens = 4;
  c.max_length = 100000;
  return c;
}

TEST_F(PromptTest, OfficialLayoutIsTheOfficialConversationTextByteForByte) {
  const PromptConfig config = OfficialConfig();
  // Spelled out once for shot 1: the middle (second) example has no "</s>", the query turn two spaces.
  const Episode one = FixedEpisode(1, kEvalQuestion);
  EXPECT_EQ(RenderText(one, config),
            "<s>You should find the causal relationship between the examples I am going to show you. And use that to "
            "answer to the [FINAL QUESTION]. USER: [BEGIN EXAMPLE] What is in the image <image>? ASSISTANT: there is "
            "\"zorp\" in the image. [END EXAMPLE]</s><s> USER: [BEGIN EXAMPLE] What is in the image <image>? "
            "ASSISTANT: there is \"kit fox\" in the image. [END EXAMPLE]<s>[FINAL QUESTION]:  USER: Based on the "
            "previous examples, what is in the image <image>? ASSISTANT: there is \"zorp\" in the image.</s>");
  EXPECT_EQ(RenderEvalText(one, config),
            "<s>You should find the causal relationship between the examples I am going to show you. And use that to "
            "answer to the [FINAL QUESTION]. USER: [BEGIN EXAMPLE] What is in the image <image>? ASSISTANT: there is "
            "\"zorp\" in the image. [END EXAMPLE]</s><s> USER: [BEGIN EXAMPLE] What is in the image <image>? "
            "ASSISTANT: there is \"kit fox\" in the image. [END EXAMPLE]<s>[FINAL QUESTION]:  USER: Based on the "
            "previous examples, what is in the image <image>? ASSISTANT:");
  // Shot 0 (evaluation): the query turn alone, without the causal sentence.
  const Episode zero = FixedEpisode(0, kEvalQuestion);
  EXPECT_EQ(RenderEvalText(zero, config),
            "<s>[FINAL QUESTION]:  USER: Based on the previous examples, what is in the image <image>? ASSISTANT:");
  // Every shot, training and evaluation, an ICL.json-style training question too: the official rules' text.
  for (int shot : {0, 1, 2, 5, 16}) {
    for (const std::string& q : {std::string(kEvalQuestion), std::string("Based on the examples above, what is in "
                                                                         "the image <image>?")}) {
      const Episode e = FixedEpisode(shot, q);
      EXPECT_EQ(RenderText(e, config), OfficialText(e, /*eval=*/false)) << "shot " << shot;
      EXPECT_EQ(RenderEvalText(e, config), OfficialText(e, /*eval=*/true)) << "shot " << shot;
    }
  }
  // The layout keeps data.system: another sentence replaces the causal one, nothing else.
  PromptConfig other = config;
  other.system = "Learn.";
  std::string expected = OfficialText(one, false);
  expected.replace(expected.find(kCausal), std::string(kCausal).size(), "Learn.");
  EXPECT_EQ(RenderText(one, other), expected);
}

TEST_F(PromptTest, OfficialTokensAreEachTurnTokenizedAloneWithTheFinalAnswerLabelledOnly) {
  const Tokenizer& tok = *tok_;
  const PromptConfig config = OfficialConfig();
  for (int shot : {0, 1, 3}) {
    const Episode e = FixedEpisode(shot, "What is the thing in <image> called?");
    // The reference ids: each turn's own tokenization, the middle turns' last token (their eos) dropped.
    const std::vector<std::string> turns = OfficialTurnTexts(e, /*eval=*/false);
    std::vector<int> expected;
    for (size_t i = 0; i < turns.size(); ++i) {
      std::vector<int> ids = OfficialTurnIds(turns[i], tok, config.image_tokens);
      if (i > 0 && i + 1 < turns.size()) {
        ASSERT_EQ(ids.back(), tok.eos_id());
        ids.pop_back();
      }
      expected.insert(expected.end(), ids.begin(), ids.end());
    }
    const TokenizedPrompt p = TokenizeEpisode(e, tok, config);
    ASSERT_EQ(p.input_ids, expected) << "shot " << shot;
    // Labelled: the final answer and its eos, nothing else (the official __getitem_icl__ masks the rest).
    std::vector<int> labelled;
    size_t first = p.labels.size();
    for (size_t k = 0; k < p.labels.size(); ++k) {
      if (p.labels[k] == kIgnoreIndex) continue;
      ASSERT_EQ(p.labels[k], p.input_ids[k]);
      first = std::min(first, k);
      labelled.push_back(p.labels[k]);
    }
    ASSERT_FALSE(labelled.empty());
    EXPECT_EQ(first + labelled.size(), p.labels.size()) << "one run, at the end";
    EXPECT_EQ(labelled.back(), tok.eos_id());
    EXPECT_EQ(tok.Decode(labelled), "there is \"zorp\" in the image.");
    // The evaluation prompt (every token before that run) is the official evaluation input: its last turn ends
    // with "ASSISTANT:".
    std::vector<int> eval_expected;
    const std::vector<std::string> eval_turns = OfficialTurnTexts(e, /*eval=*/true);
    for (size_t i = 0; i < eval_turns.size(); ++i) {
      std::vector<int> ids = OfficialTurnIds(eval_turns[i], tok, config.image_tokens);
      if (i > 0 && i + 1 < eval_turns.size()) ids.pop_back();
      eval_expected.insert(eval_expected.end(), ids.begin(), ids.end());
    }
    EXPECT_EQ(std::vector<int>(p.input_ids.begin(), p.input_ids.begin() + static_cast<long>(first)), eval_expected)
        << "shot " << shot;
  }
  // loss_on all: every answer is labelled; the middle examples' runs end without eos, as their text has none.
  PromptConfig all = config;
  all.loss_on = LossOn::kAll;
  const Episode e = FixedEpisode(2, kEvalQuestion);
  const TokenizedPrompt p = TokenizeEpisode(e, tok, all);
  std::vector<std::vector<int>> runs;
  for (size_t k = 0; k < p.labels.size(); ++k) {
    if (p.labels[k] == kIgnoreIndex) continue;
    if (k == 0 || p.labels[k - 1] == kIgnoreIndex) runs.emplace_back();
    runs.back().push_back(p.labels[k]);
  }
  ASSERT_EQ(runs.size(), e.examples.size() + 1);
  for (size_t i = 0; i < runs.size(); ++i) {
    const bool keeps_eos = i == 0 || i + 1 == runs.size();
    EXPECT_EQ(runs[i].back() == tok.eos_id(), keeps_eos) << "answer " << i;
    const std::string label = i < e.examples.size() ? e.examples[i].label : e.query_label;
    EXPECT_NE(tok.Decode(runs[i]).find("\"" + label + "\""), std::string::npos) << "answer " << i;
  }
  // The same ids whatever is labelled.
  EXPECT_EQ(p.input_ids, TokenizeEpisode(e, tok, config).input_ids);
}

TEST_F(PromptTest, LossOnFinalLabelsOnlyTheFinalAnswerInLclsLayoutsToo) {
  const Tokenizer& tok = *tok_;
  for (PromptLayout layout : {PromptLayout::kVicuna, PromptLayout::kCompact}) {
    PromptConfig config;
    config.layout = layout;
    config.image_tokens = 4;
    config.max_length = 100000;
    const Episode e = TrainEpisodes(RealTable(), EpisodeConfig{}).Build(0, 2);
    const TokenizedPrompt every = TokenizeEpisode(e, tok, config);
    config.loss_on = LossOn::kFinal;
    const TokenizedPrompt final_only = TokenizeEpisode(e, tok, config);
    ASSERT_EQ(final_only.input_ids, every.input_ids);
    std::vector<int> labelled;
    int64_t every_count = 0;
    for (int l : every.labels) every_count += l != kIgnoreIndex;
    for (int l : final_only.labels) {
      if (l != kIgnoreIndex) labelled.push_back(l);
    }
    std::vector<int> answer = tok.Encode(RenderTurns(e, layout).back().assistant);
    answer.push_back(tok.eos_id());
    EXPECT_EQ(labelled, answer);
    EXPECT_GT(every_count, 20 * int64_t(labelled.size()));  // 33 answers vs 1
  }
}

TEST_F(PromptTest, DefaultMaxLengthFitsSixteenShotsAndAReductionReportsWhatItDropped) {
  const Tokenizer& tok = *tok_;
  TrainEpisodes episodes(RealTable(), EpisodeConfig{});  // shot 16
  for (PromptLayout layout : {PromptLayout::kVicuna, PromptLayout::kOfficial}) {
    PromptConfig config;  // 256 image tokens per image, the default max_length
    config.layout = layout;
    for (uint64_t i = 0; i < 8; ++i) {
      const TokenizedPrompt p = TokenizeEpisode(episodes.Build(0, i), tok, config);
      EXPECT_EQ(p.shot, 16) << "episode " << i;
      EXPECT_EQ(p.requested_shot, 16);
      EXPECT_EQ(p.requested_tokens, static_cast<int>(p.input_ids.size()));
      EXPECT_GT(p.input_ids.size(), 33u * 258u);
    }
  }
  // Over the limit: the prompt says what was asked for and how long it was.
  PromptConfig small;
  small.max_length = 4000;
  const Episode e = episodes.Build(0, 1);
  const TokenizedPrompt full = TokenizeEpisode(e, tok, PromptConfig{});
  const TokenizedPrompt p = TokenizeEpisode(e, tok, small);
  EXPECT_LT(p.shot, 16);
  EXPECT_EQ(p.requested_shot, 16);
  EXPECT_EQ(p.requested_tokens, static_cast<int>(full.input_ids.size()));
  EXPECT_LE(p.input_ids.size(), 4000u);
}

TEST_F(PromptTest, UnknownLayoutOrLossOnIsAConfigErrorListingTheChoices) {
  testing::ExpectErrorMentions<ConfigError>([] { ParsePromptLayout("paper"); },
                                            {"paper", "vicuna | official | compact"});
  testing::ExpectErrorMentions<ConfigError>([] { ParseLossOn("answers"); }, {"answers", "all | final"});
  EXPECT_EQ(ParsePromptLayout("official"), PromptLayout::kOfficial);
  EXPECT_EQ(ParsePromptLayout("vicuna"), PromptLayout::kVicuna);
  EXPECT_EQ(ParseLossOn("final"), LossOn::kFinal);
}

}  // namespace
}  // namespace lcl::sampler
