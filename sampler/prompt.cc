// Conversation rendering in the three layouts, tokenization with image blocks, the label mask and the length policy.
#include "sampler/prompt.h"

#include <cctype>

#include "cluster/errors.h"
#include "sampler/templates.h"

namespace lcl::sampler {
namespace {

constexpr const char* kCompactQuestion = " ?";  // after the query image in the compact layout
// The official final_v1.0 conversation's system text; its separator adds a second space before "USER:".
constexpr const char* kFinalQuestion = "[FINAL QUESTION]: ";

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

// One turn as its layout lays it out: [bos] user text, " " answer, [eos]. The text and the tokens are both made
// from this, so RenderText shows exactly what TokenizeEpisode encodes.
struct TurnText {
  bool bos = false;  // opens with the tokenizer's bos ("<s>")
  std::string user;  // everything before the answer, "<image>" markers included
  std::string answer;
  bool eos = false;       // the answer is followed by eos ("</s>")
  bool labelled = false;  // the answer (and its eos) enter the loss
};

// The official code builds one conversation per turn (causal_v1.0 for the first example, hypnotized_ans_v1.0 for
// the others, final_v1.0 for the query), tokenizes each with its bos, drops the last token (the </s>) of every
// turn after the first but the last, and concatenates.
// An instruction conversation: one conversation, one bos, every answer labelled and followed by its eos; in the
// vicuna and official layouts the Vicuna v1.1 turns under conversation_system (what the official code's single-image
// datasets render with), in the compact layout the texts alone.
std::vector<TurnText> LayOutConversation(const Episode& e, const PromptConfig& config) {
  std::vector<TurnText> out;
  for (size_t i = 0; i < e.conversation.size(); ++i) {
    TurnText t;
    t.bos = i == 0;
    t.answer = e.conversation[i].assistant;
    t.eos = true;
    t.labelled = true;
    t.user = config.layout == PromptLayout::kCompact ? e.conversation[i].user
                                                     : (i == 0 ? config.conversation_system + " " : std::string()) +
                                                           "USER: " + e.conversation[i].user + " ASSISTANT:";
    out.push_back(std::move(t));
  }
  return out;
}

std::vector<TurnText> LayOut(const Episode& e, const PromptConfig& config) {
  if (!e.conversation.empty()) return LayOutConversation(e, config);
  const std::vector<Turn> turns = RenderTurns(e, config.layout, config.support_names);
  std::vector<TurnText> out(turns.size());
  const size_t last = turns.size() - 1;
  for (size_t i = 0; i < turns.size(); ++i) {
    TurnText& t = out[i];
    t.answer = turns[i].assistant;
    t.labelled = config.loss_on == LossOn::kAll || i == last;
    switch (config.layout) {
      case PromptLayout::kCompact:
        t.bos = i == 0;
        t.user = turns[i].user;
        t.eos = true;
        break;
      case PromptLayout::kVicuna:
        t.bos = i == 0;
        t.user = (i == 0 ? config.system + " " : std::string()) + "USER: " + turns[i].user + " ASSISTANT:";
        t.eos = true;
        break;
      case PromptLayout::kOfficial: {
        // ADD_COLON_TWO puts "system sep" first; hypnotized_ans_v1.0 (EMPTY) puts its sep (" ") alone.
        const std::string head =
            i == last ? std::string(kFinalQuestion) + " " : (i == 0 ? config.system + " " : std::string(" "));
        t.bos = true;
        t.user = head + "USER: " + turns[i].user + " ASSISTANT:";
        t.eos = i == 0 || i == last;
        break;
      }
    }
  }
  return out;
}

// A turn's text; lcl's layouts are shown without their single bos (as they always were), the official one with
// every turn's "<s>". Without the answer: what evaluation feeds, up to the "ASSISTANT:" the model answers after.
std::string TurnString(const TurnText& t, const PromptConfig& config, bool with_answer) {
  std::string s = (t.bos && config.layout == PromptLayout::kOfficial ? "<s>" : "") + t.user;
  if (with_answer) s += " " + t.answer + (t.eos ? "</s>" : "");
  return s;
}

// The text around an image block loses its adjacent whitespace in the official layout, as the official (slow,
// transformers 4.29) LLaMA tokenizer strips it around the added image tokens.
std::string StripRight(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  return s;
}
std::string StripLeft(const std::string& s) {
  size_t i = 0;
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  return s.substr(i);
}

// Appends text with each "<image>" expanded to its patches (between image-start and image-end when
// `markers`); all unlabelled. Each piece between images is encoded on its own (SentencePiece adds its dummy
// prefix to each, as the official tokenizer does); `strip` trims the whitespace next to each image block.
// Returns the number of image blocks appended.
int AppendUserText(const std::string& text, const Tokenizer& tok, int image_tokens, bool markers, bool strip,
                   TokenizedPrompt& out) {
  const std::string marker = kImageMarker;
  int blocks = 0;
  size_t start = 0;
  while (true) {
    size_t at = text.find(marker, start);
    std::string piece = text.substr(start, at == std::string::npos ? std::string::npos : at - start);
    if (strip && start > 0) piece = StripLeft(piece);
    if (strip && at != std::string::npos) piece = StripRight(piece);
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
  for (const TurnText& t : LayOut(e, config)) {
    if (t.bos) {
      out.input_ids.push_back(tok.bos_id());
      out.labels.push_back(kIgnoreIndex);
      out.text_tokens += 1;
    }
    AppendUserText(t.user, tok, config.image_tokens, config.image_markers,
                   /*strip=*/config.layout == PromptLayout::kOfficial, out);
    // The answer (with its eos, when the layout keeps one) is all that can be labelled: the model learns to
    // answer and to stop. Encoded on its own, "ASSISTANT:" + " there" gives the tokens of "ASSISTANT: there"
    // (SentencePiece never merges across a space).
    std::vector<int> answer = tok.Encode(t.answer);
    if (t.eos) answer.push_back(tok.eos_id());
    out.input_ids.insert(out.input_ids.end(), answer.begin(), answer.end());
    if (t.labelled) {
      out.labels.insert(out.labels.end(), answer.begin(), answer.end());
    } else {
      out.labels.insert(out.labels.end(), answer.size(), kIgnoreIndex);
    }
    out.text_tokens += static_cast<int>(answer.size());
  }
  for (const ExampleTurn& t : e.examples) out.images.push_back(t.image);
  out.images.push_back(e.query);
  return out;
}

}  // namespace

PromptLayout ParsePromptLayout(const std::string& name) {
  if (name == "vicuna") return PromptLayout::kVicuna;
  if (name == "official") return PromptLayout::kOfficial;
  if (name == "compact") return PromptLayout::kCompact;
  throw ConfigError("unknown prompt layout '" + name + "': use vicuna | official | compact");
}

LossOn ParseLossOn(const std::string& name) {
  if (name == "all") return LossOn::kAll;
  if (name == "final") return LossOn::kFinal;
  throw ConfigError("unknown loss_on '" + name + "': use all | final");
}

std::vector<Turn> RenderTurns(const Episode& e, PromptLayout layout, bool support_names) {
  if (!e.conversation.empty()) return e.conversation;
  std::vector<Turn> turns;
  // A policy with its own texts (2way_ref, jigsaw) puts them on the turns; the others leave them empty.
  if (layout == PromptLayout::kCompact) {
    for (const ExampleTurn& t : e.examples) {
      turns.push_back({kImageMarker, t.answer.empty() ? NamedLabel(t, support_names) : t.answer});
    }
    // The question mark tells the query from an example at any shot count, so the answer is the label alone
    // even when examples carry more (support_names).
    turns.push_back({std::string(kImageMarker) + kCompactQuestion, e.query_label});
    return turns;
  }
  for (const ExampleTurn& t : e.examples) {
    turns.push_back({t.question.empty() ? std::string("[BEGIN EXAMPLE] What is in the image <image>?") : t.question,
                     t.answer.empty() ? ExampleAnswer(NamedLabel(t, support_names)) : t.answer});
  }
  turns.push_back({e.question, e.query_answer.empty() ? FinalAnswer(e.query_label) : e.query_answer});
  return turns;
}

std::string RenderText(const Episode& e, const PromptConfig& config) {
  std::string text;
  for (const TurnText& t : LayOut(e, config)) text += TurnString(t, config, /*with_answer=*/true);
  return text;
}

std::string RenderEvalText(const Episode& e, const PromptConfig& config) {
  const std::vector<TurnText> turns = LayOut(e, config);
  std::string text;
  for (size_t i = 0; i < turns.size(); ++i) text += TurnString(turns[i], config, /*with_answer=*/i + 1 < turns.size());
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
  int requested_tokens = -1;
  while (true) {
    TokenizedPrompt p = TokenizeOnce(e, tok, config);
    if (requested_tokens < 0) requested_tokens = static_cast<int>(p.input_ids.size());
    if (static_cast<int>(p.input_ids.size()) <= config.max_length) {
      p.requested_shot = episode.shot;
      p.requested_tokens = requested_tokens;
      return p;
    }
    // Shrinking removes whole turns, so an image block is never cut.
    if (config.reduce_shots && e.shot > config.min_shot) {
      e = DropExamplePair(e);
      continue;
    }
    if (!e.conversation.empty()) {
      throw DataError("instruction conversation (epoch " + std::to_string(e.epoch) + ", index " +
                      std::to_string(e.index) + ", image " + e.query.path + ") needs " +
                      std::to_string(p.input_ids.size()) + " tokens but max_length is " +
                      std::to_string(config.max_length) +
                      " (a conversation has no example pairs to drop); raise data.max_length or shorten the record");
    }
    const int images = static_cast<int>(p.images.size());
    throw DataError("episode (epoch " + std::to_string(e.epoch) + ", index " + std::to_string(e.index) + ") needs " +
                    std::to_string(p.input_ids.size()) + " tokens at shot " + std::to_string(e.shot) + " (" +
                    std::to_string(images) + " images x " +
                    std::to_string(config.image_tokens + (config.image_markers ? 2 : 0)) + " + " +
                    std::to_string(p.text_tokens) + " text) but max_length is " + std::to_string(config.max_length) +
                    (config.reduce_shots ? " even at min_shot " + std::to_string(config.min_shot)
                                         : std::string(" and data.too_long is reject")) +
                    "; raise data.max_length, or lower data.shot or the model's image tokens" +
                    (config.reduce_shots ? std::string() : ", or set data.too_long=drop_shots"));
  }
}

}  // namespace lcl::sampler
