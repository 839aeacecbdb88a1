// Conversation rendering, tokenization with image blocks, label mask and the length policy.
#include "sampler/prompt.h"

#include "cluster/errors.h"
#include "sampler/templates.h"

namespace lcl::sampler {
namespace {

constexpr const char* kCompactQuestion = " ?";  // after the query image in the compact layout

std::string ExampleAnswer(const std::string& label) { return "there is \"" + label + "\" in the image. [END EXAMPLE]"; }

// An example's label, followed by its class name when asked to (and when the label is not the name already).
std::string NamedLabel(const ExampleTurn& t, bool support_names) {
  if (!support_names || t.class_name == t.label) return t.label;
  if (t.class_name.empty()) {
    throw DataError("data.support_names is on but an example image (" + t.image.path +
                    ") has no class name (ISEKAI-style files carry none); turn data.support_names off");
  }
  return t.label + " " + t.class_name;
}
std::string FinalAnswer(const std::string& label) { return "there is \"" + label + "\" in the image."; }

// The user side of turn i as the layout renders it (the answer follows it after a space).
std::string UserText(const Turn& turn, size_t i, const PromptConfig& config) {
  if (config.layout == PromptLayout::kCompact) return turn.user;
  return (i == 0 ? config.system + " " : std::string()) + "USER: " + turn.user + " ASSISTANT:";
}

// Appends text with each "<image>" expanded to its patches (between image-start and image-end when
// `markers`); all unlabelled.
// Returns the number of image blocks appended.
int AppendUserText(const std::string& text, const Tokenizer& tok, int image_tokens, bool markers,
                   TokenizedPrompt& out) {
  const std::string marker = kImageMarker;
  int blocks = 0;
  size_t start = 0;
  while (true) {
    size_t at = text.find(marker, start);
    std::string piece = text.substr(start, at == std::string::npos ? std::string::npos : at - start);
    if (!piece.empty()) {
      std::vector<int> ids = tok.Encode(piece);
      out.input_ids.insert(out.input_ids.end(), ids.begin(), ids.end());
      out.text_tokens += static_cast<int>(ids.size());
    }
    if (at == std::string::npos) break;
    if (markers) out.input_ids.push_back(tok.im_start_id());
    out.input_ids.insert(out.input_ids.end(), image_tokens, tok.im_patch_id());
    if (markers) out.input_ids.push_back(tok.im_end_id());
    ++blocks;
    start = at + marker.size();
  }
  out.labels.resize(out.input_ids.size(), kIgnoreIndex);
  return blocks;
}

TokenizedPrompt TokenizeOnce(const Episode& e, const Tokenizer& tok, const PromptConfig& config) {
  TokenizedPrompt out;
  out.shot = e.shot;
  out.input_ids.push_back(tok.bos_id());
  out.labels.push_back(kIgnoreIndex);
  out.text_tokens = 1;
  std::vector<Turn> turns = RenderTurns(e, config.layout, config.support_names);
  for (size_t i = 0; i < turns.size(); ++i) {
    AppendUserText(UserText(turns[i], i, config), tok, config.image_tokens, config.image_markers, out);
    // The answer and its eos are the only labelled positions: the model learns to answer and to
    // stop.
    std::vector<int> answer = tok.Encode(turns[i].assistant);
    answer.push_back(tok.eos_id());
    out.input_ids.insert(out.input_ids.end(), answer.begin(), answer.end());
    out.labels.insert(out.labels.end(), answer.begin(), answer.end());
    out.text_tokens += static_cast<int>(answer.size());
  }
  for (const ExampleTurn& t : e.examples) out.images.push_back(t.image);
  out.images.push_back(e.query);
  return out;
}

}  // namespace

PromptLayout ParsePromptLayout(const std::string& name) {
  if (name == "official") return PromptLayout::kOfficial;
  if (name == "compact") return PromptLayout::kCompact;
  throw ConfigError("unknown prompt layout '" + name + "': use official or compact");
}

std::vector<Turn> RenderTurns(const Episode& e, PromptLayout layout, bool support_names) {
  std::vector<Turn> turns;
  if (layout == PromptLayout::kCompact) {
    for (const ExampleTurn& t : e.examples) turns.push_back({kImageMarker, NamedLabel(t, support_names)});
    // The question mark tells the query from an example at any shot count, so the answer is the label alone
    // even when examples carry more (support_names).
    turns.push_back({std::string(kImageMarker) + kCompactQuestion, e.query_label});
    return turns;
  }
  for (const ExampleTurn& t : e.examples) {
    turns.push_back({"[BEGIN EXAMPLE] What is in the image <image>?", ExampleAnswer(NamedLabel(t, support_names))});
  }
  turns.push_back({e.question, FinalAnswer(e.query_label)});
  return turns;
}

std::string RenderText(const Episode& e, const PromptConfig& config) {
  std::string text;
  std::vector<Turn> turns = RenderTurns(e, config.layout, config.support_names);
  for (size_t i = 0; i < turns.size(); ++i) {
    text += UserText(turns[i], i, config) + " " + turns[i].assistant + "</s>";
  }
  return text;
}

Episode DropExamplePair(const Episode& e) {
  Episode out = e;
  for (bool side : {true, false}) {
    for (size_t i = out.examples.size(); i-- > 0;) {
      if (out.examples[i].positive == side) {
        out.examples.erase(out.examples.begin() + static_cast<long>(i));
        break;
      }
    }
  }
  out.shot = e.shot - 1;
  return out;
}

TokenizedPrompt TokenizeEpisode(const Episode& episode, const Tokenizer& tok, const PromptConfig& config) {
  Episode e = episode;
  while (true) {
    TokenizedPrompt p = TokenizeOnce(e, tok, config);
    if (static_cast<int>(p.input_ids.size()) <= config.max_length) return p;
    // Shrinking removes whole turns, so an image block is never cut.
    if (config.reduce_shots && e.shot > config.min_shot) {
      e = DropExamplePair(e);
      continue;
    }
    const int images = static_cast<int>(p.images.size());
    throw DataError("episode (epoch " + std::to_string(e.epoch) + ", index " + std::to_string(e.index) + ") needs " +
                    std::to_string(p.input_ids.size()) + " tokens at shot " + std::to_string(e.shot) + " (" +
                    std::to_string(images) + " images x " +
                    std::to_string(config.image_tokens + (config.image_markers ? 2 : 0)) + " + " +
                    std::to_string(p.text_tokens) + " text) but max_length is " + std::to_string(config.max_length) +
                    (config.reduce_shots ? " even at min_shot " + std::to_string(config.min_shot)
                                         : std::string(" and reduce_shots is off")) +
                    "; raise max_length or lower shot or image_tokens");
  }
}

}  // namespace lcl::sampler
