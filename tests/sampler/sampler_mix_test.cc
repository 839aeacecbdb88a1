// LCL-Mix: LLaVA-format instruction files (what `lcl data synth` writes, JSON lines, every bad record named with its
// file and record), the mixed stream (probabilities, purity, the plain stream at probability 0, one pass visiting
// every record once), conversations rendered with every answer labelled, and a missing image replaced and counted.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include "cluster/errors.h"
#include "sampler/instruct.h"
#include "sampler/mix.h"
#include "sampler/pipeline.h"
#include "sampler/synth.h"
#include "sampler/tokenizer.h"
#include "tests/sampler/test_util.h"

namespace lcl::sampler {
namespace {

namespace fs = std::filesystem;

class MixTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    SynthOptions o;
    o.out = dir_->path();
    o.classes = 8;
    o.images_per_class = 6;
    o.width = o.height = 32;
    synth_ = new SynthResult(Synthesize(o));
    table_ = new PairsTable(PairsTable::Read(synth_->train_pairs));
    std::vector<std::string> names;
    for (const ClassPairs& c : table_->classes()) names.push_back(c.class_name);
    names.push_back("What is in the image? Name the object in the picture. What does this image show?");
    TrainTokenizer(DefaultTokenizerCorpus(names), 400, dir_->path() + "/tok.model");
    tok_ = new Tokenizer(Tokenizer::Load(dir_->path() + "/tok.model"));
  }
  static void TearDownTestSuite() {
    delete tok_;
    delete table_;
    delete synth_;
    delete dir_;
  }
  static std::string Write(const std::string& name, const std::string& text) {
    const std::string path = dir_->path() + "/" + name;
    testing::WriteText(path, text);
    return path;
  }
  static testing::TempDir* dir_;
  static SynthResult* synth_;
  static PairsTable* table_;
  static Tokenizer* tok_;
};
testing::TempDir* MixTest::dir_ = nullptr;
SynthResult* MixTest::synth_ = nullptr;
PairsTable* MixTest::table_ = nullptr;
Tokenizer* MixTest::tok_ = nullptr;

TEST_F(MixTest, SynthWritesOneImageToClassNameConversationPerTrainingImage) {
  const InstructFile f = InstructFile::Read(synth_->instruct);
  ASSERT_EQ(f.size(), table_->size() * 6);
  std::set<std::string> names;
  for (const ClassPairs& c : table_->classes()) names.insert(c.class_name);
  std::set<std::string> questions;
  for (const InstructRecord& r : f.records()) {
    EXPECT_TRUE(fs::is_regular_file(dir_->path() + "/" + r.image)) << r.image;
    ASSERT_EQ(r.turns.size(), 1u);
    EXPECT_EQ(r.turns[0].user.rfind("<image>\n", 0), 0u) << r.turns[0].user;
    EXPECT_TRUE(names.count(r.turns[0].assistant)) << r.turns[0].assistant;
    questions.insert(r.turns[0].user);
  }
  EXPECT_EQ(questions.size(), 4u);  // every phrasing occurs
  EXPECT_EQ(f.images().size(), f.size());
}

TEST_F(MixTest, JsonLinesAndAnImageRootAreRead) {
  const std::string path =
      Write("lines.jsonl",
            "{\"id\": 7, \"image\": \"a/b.jpg\", \"conversations\": ["
            "{\"from\": \"human\", \"value\": \"Look. <image>\"}, {\"from\": \"gpt\", \"value\": \"A.\"},"
            "{\"from\": \"human\", \"value\": \"And?\"}, {\"from\": \"gpt\", \"value\": \"B.\"}]}\n"
            "\n"
            "{\"image\": \"/abs/c.jpg\", \"conversations\": ["
            "{\"from\": \"human\", \"value\": \"<image>\"}, {\"from\": \"gpt\", \"value\": \"C\"}]}\n");
  const InstructFile f = InstructFile::Read(path, "rel/root");
  ASSERT_EQ(f.size(), 2u);
  EXPECT_EQ(f.records()[0].id, "7");
  EXPECT_EQ(f.records()[1].id, "1");
  EXPECT_EQ(f.records()[0].image, (fs::absolute("rel/root") / "a/b.jpg").string());
  EXPECT_EQ(f.records()[1].image, "/abs/c.jpg");  // absolute paths stay
  ASSERT_EQ(f.records()[0].turns.size(), 2u);
  EXPECT_EQ(f.records()[0].turns[1].user, "And?");
  EXPECT_EQ(f.records()[0].turns[1].assistant, "B.");
}

TEST_F(MixTest, EveryBadRecordIsAnErrorNamingTheFileAndTheRecord) {
  const std::string ok = R"({"from": "gpt", "value": "x"})";
  const std::map<std::string, std::pair<std::string, std::string>> cases = {
      {"no_image_marker",
       {R"([{"image": "i.jpg", "conversations": [{"from": "human", "value": "hi"}, )" + ok + "]}]",
        "0 \"<image>\" markers"}},
      {"two_markers",
       {R"([{"image": "i.jpg", "conversations": [{"from": "human", "value": "<image> <image>"}, )" + ok + "]}]",
        "2 \"<image>\" markers"}},
      {"unknown_role",
       {R"([{"image": "i.jpg", "conversations": [{"from": "human", "value": "<image>"}, {"from": "bot", "value": "x"}]}])",
        "unknown \"from\": \"bot\" (use human | gpt)"}},
      {"out_of_order", {R"([{"image": "i.jpg", "conversations": [)" + ok + "]}]", "expected \"human\""}},
      {"answer_with_image",
       {R"([{"image": "i.jpg", "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "<image>"}]}])",
        "an answer (gpt) holds"}},
      {"unanswered",
       {R"([{"image": "i.jpg", "conversations": [{"from": "human", "value": "<image>"}]}])", "no gpt answer"}},
      {"no_image", {R"([{"conversations": [{"from": "human", "value": "<image>"}, )" + ok + "]}]", "no \"image\""}},
      {"not_object", {"[3]", "expected an object"}},
      {"no_conversations", {R"([{"image": "i.jpg", "conversations": []}])", "non-empty array"}},
      {"malformed", {R"([{"image": "i.jpg", )", "not valid JSON"}},
      {"empty", {"  \n", "is empty"}},
      {"no_records", {"[]", "no records"}},
  };
  for (const auto& [name, c] : cases) {
    const std::string path = Write(name + ".json", c.first);
    const std::string error = testing::ErrorOf<DataError>([&] { InstructFile::Read(path); });
    EXPECT_NE(error.find(path), std::string::npos) << name << ": " << error;
    EXPECT_NE(error.find(c.second), std::string::npos) << name << ": " << error;
    if (name != "malformed" && name != "empty" && name != "no_records") {
      EXPECT_NE(error.find("record 0"), std::string::npos) << name << ": " << error;
    }
  }
  // JSON lines name the line; a second good record does not hide a bad third one.
  const std::string lines = Write(
      "bad.jsonl", std::string(R"({"image": "i.jpg", "conversations": [{"from": "human", "value": "<image>"}, )") + ok +
                       "]}\n\n{\"image\": \"j.jpg\"}\n");
  testing::ExpectErrorMentions<DataError>([&] { InstructFile::Read(lines); }, {lines + ":3", "\"conversations\""});
  testing::ExpectErrorMentions<DataError>([&] { InstructFile::Read(dir_->path() + "/absent.json"); },
                                          {"absent.json", "cannot be opened", "data.mix_files"});
}

std::string Text(const Episode& e) {
  PromptConfig p;
  return RenderText(e, p) + "|" + e.query.path;
}

TEST_F(MixTest, ProbabilityZeroIsThePlainStreamAndOneIsConversationsOnly) {
  const InstructFile f = InstructFile::Read(synth_->instruct);
  EpisodeConfig ec;
  ec.shot = 2;
  TrainEpisodes plain(*table_, ec);
  MixedEpisodes none(plain, {{&f, 0.0}}, 5);
  MixedEpisodes all(plain, {{&f, 1.0}}, 5);
  for (uint64_t e = 0; e < 3; ++e) {
    for (uint64_t i = 0; i < plain.EpisodesPerEpoch(); ++i) {
      EXPECT_EQ(Text(none.Build(e, i)), Text(plain.Build(e, i)));
      const Episode c = all.Build(e, i);
      EXPECT_EQ(c.policy, "llava");
      EXPECT_FALSE(c.conversation.empty());
      EXPECT_TRUE(c.examples.empty());
    }
  }
  EXPECT_EQ(none.EpisodesPerEpoch(), plain.EpisodesPerEpoch());
}

TEST_F(MixTest, SourcesFollowTheirProbabilitiesPurelyAndAPassVisitsEveryRecordOnce) {
  const InstructFile f = InstructFile::Read(synth_->instruct);
  const std::string small_path = Write(
      "small.json",
      R"([{"image": "x.jpg", "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "a"}]},
                             {"image": "y.jpg", "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "b"}]}])");
  const InstructFile small = InstructFile::Read(small_path);
  EpisodeConfig ec;
  ec.shot = 2;
  TrainEpisodes plain(*table_, ec);
  MixedEpisodes mix(plain, {{&f, 0.3}, {&small, 0.2}}, 11);
  MixedEpisodes again(plain, {{&f, 0.3}, {&small, 0.2}}, 11);
  const uint64_t per_epoch = mix.EpisodesPerEpoch();
  const int n = 20000;
  std::vector<int> counts(3, 0);
  for (int k = 0; k < n; ++k) {
    const uint64_t e = uint64_t(k) / per_epoch, i = uint64_t(k) % per_epoch;
    const size_t s = mix.SourceAt(e, i);
    ++counts[s];
    if (k % 97 == 0) EXPECT_EQ(Text(mix.Build(e, i)), Text(again.Build(e, i))) << k;  // pure: any instance, any order
    if (s == 2) {
      const Episode c = mix.Build(e, i);
      EXPECT_EQ(c.query.class_pos, int(table_->size()) + 1);
      EXPECT_EQ(mix.PoolOf(c.query.class_pos), small.images());
    }
  }
  const std::vector<double> p = {0.5, 0.3, 0.2};
  for (size_t s = 0; s < 3; ++s) {
    const double sd = std::sqrt(n * p[s] * (1 - p[s]));
    EXPECT_NEAR(counts[s], n * p[s], 4 * sd) << "source " << s;
  }
  // Out of order and from another instance: the same episode (the prefetch workers build keys in any order).
  EXPECT_EQ(Text(again.Build(40, 3)), Text(mix.Build(40, 3)));
  // At probability 1, positions [pass * n, (pass + 1) * n) show every record exactly once, in another order each pass.
  MixedEpisodes only(plain, {{&f, 1.0}}, 3);
  std::vector<std::string> first, second;
  for (uint64_t g = 0; g < 2 * f.size(); ++g) {
    (g < f.size() ? first : second).push_back(only.Build(g / per_epoch, g % per_epoch).query.path);
  }
  std::vector<std::string> sorted_first = first, sorted_second = second, images = f.images();
  std::sort(sorted_first.begin(), sorted_first.end());
  std::sort(sorted_second.begin(), sorted_second.end());
  std::sort(images.begin(), images.end());
  EXPECT_EQ(sorted_first, images);
  EXPECT_EQ(sorted_second, images);
  EXPECT_NE(first, second);
}

TEST_F(MixTest, ProbabilitiesOutsideTheUnitIntervalOrSummingOverOneAreConfigErrors) {
  const InstructFile f = InstructFile::Read(synth_->instruct);
  EpisodeConfig ec;
  ec.shot = 2;
  TrainEpisodes plain(*table_, ec);
  testing::ExpectErrorMentions<ConfigError>(
      [&] {
        MixedEpisodes(plain, {{&f, 0.7}, {&f, 0.4}}, 0);
      },
      {"sum to 1.1", "data.mix_weights"});
  testing::ExpectErrorMentions<ConfigError>(
      [&] {
        MixedEpisodes(plain, {{&f, -0.1}}, 0);
      },
      {"outside [0, 1]", "llava_instruct.json"});
}

Episode Conversation() {
  Episode e;
  e.policy = "llava";
  e.query = ImageRef("train/x.JPEG", 0);
  e.conversation = {{"<image>\nWhat is this?", "cat"}, {"Is it small?", "yes"}};
  return e;
}

TEST_F(MixTest, ConversationsAreVicunaTurnsWithEveryAnswerLabelledInEveryLayout) {
  PromptConfig p;
  p.image_tokens = 3;
  p.loss_on = LossOn::kFinal;  // conversations label every answer whatever loss_on says
  p.conversation_system = "SYS.";
  const Episode e = Conversation();
  p.layout = PromptLayout::kVicuna;
  EXPECT_EQ(RenderText(e, p),
            "SYS. USER: <image>\nWhat is this? ASSISTANT: cat</s>USER: Is it small? ASSISTANT: yes</s>");
  p.layout = PromptLayout::kOfficial;
  EXPECT_EQ(RenderText(e, p),
            "<s>SYS. USER: <image>\nWhat is this? ASSISTANT: cat</s>USER: Is it small? ASSISTANT: yes</s>");
  p.layout = PromptLayout::kCompact;
  EXPECT_EQ(RenderText(e, p), "<image>\nWhat is this? cat</s>Is it small? yes</s>");
  for (PromptLayout layout : {PromptLayout::kVicuna, PromptLayout::kOfficial, PromptLayout::kCompact}) {
    p.layout = layout;
    const TokenizedPrompt t = TokenizeEpisode(e, *tok_, p);
    ASSERT_EQ(t.images.size(), 1u);
    EXPECT_EQ(t.images[0].path, "train/x.JPEG");
    EXPECT_EQ(t.input_ids[0], tok_->bos_id());
    std::vector<int> labelled;
    int patches = 0;
    for (size_t i = 0; i < t.input_ids.size(); ++i) {
      patches += t.input_ids[i] == tok_->im_patch_id();
      if (t.labels[i] != kIgnoreIndex) {
        EXPECT_EQ(t.labels[i], t.input_ids[i]);
        labelled.push_back(t.labels[i]);
      }
    }
    EXPECT_EQ(patches, 3);
    std::vector<int> expected = tok_->Encode("cat");
    expected.push_back(tok_->eos_id());
    const std::vector<int> yes = tok_->Encode("yes");
    expected.insert(expected.end(), yes.begin(), yes.end());
    expected.push_back(tok_->eos_id());
    EXPECT_EQ(labelled, expected) << "layout " << int(layout);
  }
  p.max_length = 5;
  testing::ExpectErrorMentions<DataError>([&] { TokenizeEpisode(e, *tok_, p); },
                                          {"instruction conversation", "train/x.JPEG", "raise data.max_length"});
}

TEST_F(MixTest, AMissingConversationImageIsReplacedFromTheFileAndCounted) {
  // Record 1's image does not exist: the pipeline loads a replacement from the file's images and counts it.
  const std::string path = Write(
      "missing.json",
      std::string("[") +
          R"({"image": "train/n90000001/n90000001_1.JPEG", "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "a"}]},)" +
          R"({"image": "train/none/absent.JPEG", "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "b"}]}])");
  const InstructFile f = InstructFile::Read(path);
  EpisodeConfig ec;
  ec.shot = 1;
  TrainEpisodes plain(*table_, ec);
  MixedEpisodes only(plain, {{&f, 1.0}}, 0);
  ImageSpec spec;
  spec.size = 16;
  ImageLoader loader(dir_->path(), spec, 0.9);
  PromptConfig p;
  p.image_tokens = 2;
  EpisodePipeline pipeline([&](const EpisodeKey& k) { return only.Build(k.epoch, k.index); },
                           [&](int c) { return only.PoolOf(c); }, *tok_, p, loader);
  const MicroBatch mb = pipeline.Build({{0, 0}, {0, 1}});  // one pass of two positions: both records
  EXPECT_EQ(mb.conversations, 2);
  EXPECT_EQ(mb.images.size(0), 2);
  // Every failed attempt counts (a replacement draw may hit the missing file again), and only that file failed.
  EXPECT_GE(loader.bad(), 1u);
  EXPECT_EQ(loader.recent_errors().size(), loader.bad());
  for (const std::string& error : loader.recent_errors()) EXPECT_NE(error.find("absent.JPEG"), std::string::npos);
  // The replacement is the file's other image: both blocks hold the same pixels.
  EXPECT_TRUE(torch::equal(mb.images[0], mb.images[1]));
}

}  // namespace
}  // namespace lcl::sampler
