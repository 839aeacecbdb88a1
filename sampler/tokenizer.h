// SentencePiece tokenization for LCL prompts, with the image specials (image-start, image-end,
// image-patch) appended after the SentencePiece vocabulary so that no text can ever encode to them.
//
//   lcl::sampler::TrainTokenizer(lcl::sampler::DefaultTokenizerCorpus(class_names), 512, "tok.model");
//   lcl::sampler::Tokenizer tok = lcl::sampler::Tokenizer::Load("tok.model");
//   std::vector<int> ids = tok.Encode("there is \"kit fox\" in the image.");
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace lcl::sampler {

// Trains a SentencePiece model in-process (BPE as LLaMA's, byte fallback on, one thread, so the model file
// is the same on every run) and writes it to model_path. ids: unk 0, bos 1, eos 2, pad 3 (LLaMA's
// layout plus pad). Throws lcl::DataError on an empty corpus or a SentencePiece failure;
// NotBuiltError without SentencePiece.
void TrainTokenizer(const std::vector<std::string>& sentences, int vocab_size, const std::string& model_path);

// Prompt text (system line, example turns, answers, final-question templates) and the class names,
// with some made-up words: what the prompt renderer produces, so a small vocabulary covers it well.
std::vector<std::string> DefaultTokenizerCorpus(const std::vector<std::string>& class_names,
                                                const std::vector<std::string>& templates = {});

// SentencePiece runs inside a privately loaded shim library (liblcl_spm_shim.so, found next to this
// build's targets, or at $LCL_SPM_SHIM): see spm_shim.cc for why. Copies share the loaded model.
class Tokenizer {
 public:
  // Loads a SentencePiece model (ours or LLaMA's tokenizer.model). Throws lcl::DataError naming the
  // path.
  static Tokenizer Load(const std::string& model_path);

  // Text to ids, without bos/eos. Never yields an image special.
  std::vector<int> Encode(const std::string& text) const;
  // Ids to text; specials (bos, eos, pad, image ids) are dropped.
  std::string Decode(const std::vector<int>& ids) const;

  int vocab_size() const { return sp_size_ + 3; }  // SentencePiece pieces + the 3 image specials
  int bos_id() const { return bos_id_; }
  int eos_id() const { return eos_id_; }
  int pad_id() const { return pad_id_; }  // the model's pad, else unk (as LLaVA pads LLaMA)
  int im_start_id() const { return sp_size_; }
  int im_end_id() const { return sp_size_ + 1; }
  int im_patch_id() const { return sp_size_ + 2; }

 private:
  Tokenizer() = default;

  std::shared_ptr<void> sp_;  // the shim's SentencePieceProcessor handle
  int sp_size_ = 0;
  int bos_id_ = 1;
  int eos_id_ = 2;
  int pad_id_ = 0;
};

}  // namespace lcl::sampler
