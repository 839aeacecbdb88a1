// A C shim over SentencePiece, built as its own shared library and loaded with RTLD_DEEPBIND by
// tokenizer.cc. Debian's libsentencepiece bundles (and exports) protobuf-lite 3.14; linked into a
// process that also has the system libprotobuf 3.21 (LibTorch, our protos), the two runtimes bind
// to each other's symbols and abort. Loaded privately, SentencePiece binds to its own copy. Only C
// types cross this line.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

namespace {

void SetError(const std::string& msg, char* err, int err_len) {
  if (err == nullptr || err_len <= 0) return;
  size_t n = std::min(msg.size(), static_cast<size_t>(err_len - 1));
  std::memcpy(err, msg.data(), n);
  err[n] = '\0';
}

class ArrayIterator : public sentencepiece::SentenceIterator {
 public:
  ArrayIterator(const char* const* s, int n) : s_(s), n_(n) {
    if (n_ > 0) value_ = s_[0];
  }
  bool done() const override { return i_ >= n_; }
  void Next() override {
    if (++i_ < n_) value_ = s_[i_];
  }
  const std::string& value() const override { return value_; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const char* const* s_;
  int n_;
  int i_ = 0;
  std::string value_;
};

}  // namespace

extern "C" {

__attribute__((visibility("default"))) int lcl_spm_train(const char* args, const char* const* sentences, int n,
                                                         char* err, int err_len) {
  ArrayIterator it(sentences, n);
  sentencepiece::util::Status st = sentencepiece::SentencePieceTrainer::Train(args, &it);
  if (!st.ok()) SetError(st.ToString(), err, err_len);
  return st.ok() ? 0 : 1;
}

__attribute__((visibility("default"))) void* lcl_spm_load(const char* path, char* err, int err_len) {
  auto* sp = new sentencepiece::SentencePieceProcessor();
  sentencepiece::util::Status st = sp->Load(path);
  if (!st.ok()) {
    SetError(st.ToString(), err, err_len);
    delete sp;
    return nullptr;
  }
  return sp;
}

__attribute__((visibility("default"))) void lcl_spm_free(void* h) {
  delete static_cast<sentencepiece::SentencePieceProcessor*>(h);
}

// ids[0..4] = piece size, bos, eos, pad, unk.
__attribute__((visibility("default"))) void lcl_spm_info(void* h, int* ids) {
  auto* sp = static_cast<sentencepiece::SentencePieceProcessor*>(h);
  ids[0] = sp->GetPieceSize();
  ids[1] = sp->bos_id();
  ids[2] = sp->eos_id();
  ids[3] = sp->pad_id();
  ids[4] = sp->unk_id();
}

// Returns the id count (which may exceed cap: call again with a bigger buffer), or -1 with err set.
__attribute__((visibility("default"))) int lcl_spm_encode(void* h, const char* text, int text_len, int* ids, int cap,
                                                          char* err, int err_len) {
  auto* sp = static_cast<sentencepiece::SentencePieceProcessor*>(h);
  std::vector<int> out;
  sentencepiece::util::Status st = sp->Encode(std::string(text, static_cast<size_t>(text_len)), &out);
  if (!st.ok()) {
    SetError(st.ToString(), err, err_len);
    return -1;
  }
  std::copy(out.begin(), out.begin() + std::min<long>(cap, static_cast<long>(out.size())), ids);
  return static_cast<int>(out.size());
}

// Returns the byte length of the text (which may exceed cap), or -1 with err set.
__attribute__((visibility("default"))) int lcl_spm_decode(void* h, const int* ids, int n, char* out, int cap, char* err,
                                                          int err_len) {
  auto* sp = static_cast<sentencepiece::SentencePieceProcessor*>(h);
  std::string text;
  sentencepiece::util::Status st = sp->Decode(std::vector<int>(ids, ids + n), &text);
  if (!st.ok()) {
    SetError(st.ToString(), err, err_len);
    return -1;
  }
  std::memcpy(out, text.data(), std::min<size_t>(static_cast<size_t>(cap), text.size()));
  return static_cast<int>(text.size());
}

}  // extern "C"
