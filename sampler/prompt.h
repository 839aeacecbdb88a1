// Prompt rendering and tokenization of an episode in one of three conversation layouts (lcl's Vicuna turns, the
// official code's text byte for byte, or a compact one), with a label mask over the answers (every answer, or the
// final one only) and image blocks (image-start + N patches + image-end) that are never cut by the length limit.
//
//   lcl::sampler::PromptConfig config;  // 256 image tokens, max_length 12288, reduce shots when too long
//   lcl::sampler::TokenizedPrompt p = lcl::sampler::TokenizeEpisode(episode, tokenizer, config);
//   // p.input_ids[i] is predicted where p.labels[i] != kIgnoreIndex; p.shot < p.requested_shot when reduced
#pragma once

#include <string>
#include <vector>

#include "sampler/episode.h"
#include "sampler/tokenizer.h"

namespace lcl::sampler {

inline constexpr int kIgnoreIndex = -100;  // label of a position the loss skips (PyTorch's convention)

enum class PromptLayout {
  // lcl's own: one conversation, the system line once, then `USER: ... ASSISTANT: answer</s>` per turn.
  kVicuna,
  // The official code's text: one conversation per turn, each opened by <s>: the first example under the system
  // line, the middle examples without their </s>, the query turn prefixed "[FINAL QUESTION]: " (docs/data.md).
  kOfficial,
  kCompact,  // "<image> label</s>" per example, then the query image and its label: no boilerplate
};
// "vicuna" | "official" | "compact"; anything else is a ConfigError naming the value and the choices.
PromptLayout ParsePromptLayout(const std::string& name);

// Which answers are labelled: every answer (lcl's recipe) or the final one only (the official code's).
enum class LossOn { kAll, kFinal };
// "all" | "final"; anything else is a ConfigError naming the value and the choices.
LossOn ParseLossOn(const std::string& name);

struct PromptConfig {
  std::string system =
      "A chat between a curious human and an artificial intelligence assistant. The assistant "
      "learns new "
      "concepts from the examples and answers the question about the last image.";
  int image_tokens = 256;    // patch placeholders per image (CLIP ViT-L/14 at 224 px: 256)
  int max_length = 12288;    // tokens, image blocks included: a 16-shot episode at 256 tokens per image fits
  bool reduce_shots = true;  // when too long: drop example pairs down to min_shot; else reject
  int min_shot = 1;
  PromptLayout layout = PromptLayout::kVicuna;
  LossOn loss_on = LossOn::kAll;
  // Image-start and image-end around each image's patches (LLaVA's mm_use_im_start_end); false: patches only
  // (LLaVA-1.5's layout).
  bool image_markers = true;
  // Each example answer also names the example image's class after its label ("x vo gapin"); the final answer
  // stays the label alone. A training aid for models trained from scratch (data.support_names).
  bool support_names = false;
  // The system sentence of instruction conversations (Episode::conversation) in the vicuna and official layouts:
  // the official code renders them with its vicuna_v1.1 template (data.mix_system).
  std::string conversation_system =
      "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
      "detailed, and polite answers to the user's questions.";
};

// The episode as turns: 2*shot example turns, then the final question and its answer (an instruction
// conversation: its own turns).
std::vector<Turn> RenderTurns(const Episode& episode, PromptLayout layout = PromptLayout::kVicuna,
                              bool support_names = false);
// The whole conversation as text, the training text: "<image>" markers, "</s>" where an answer's eos is, and in
// the official layout "<s>" where each turn's bos is.
std::string RenderText(const Episode& episode, const PromptConfig& config);
// What evaluation feeds the model: the text before the final answer (RenderText up to the final "ASSISTANT:").
std::string RenderEvalText(const Episode& episode, const PromptConfig& config);

struct TokenizedPrompt {
  std::vector<int> input_ids;    // [T]
  std::vector<int> labels;       // [T], kIgnoreIndex except on answer tokens and their eos
  std::vector<ImageRef> images;  // in the order of the image blocks: examples, then the query
  int shot = 0;                  // per side, after any reduction
  int text_tokens = 0;           // tokens outside image blocks
  int requested_shot = 0;        // per side, as the episode came (shot < requested_shot: example pairs dropped)
  int requested_tokens = 0;      // tokens at requested_shot (> max_length when reduced)
};

// Tokenizes the episode; throws lcl::DataError when it is longer than max_length and cannot be
// reduced (the message gives the token counts).
TokenizedPrompt TokenizeEpisode(const Episode& episode, const Tokenizer& tokenizer, const PromptConfig& config);

// The episode with one positive and one negative example turn removed (the last of each), so both
// sides keep the same shot.
Episode DropExamplePair(const Episode& episode);

}  // namespace lcl::sampler
