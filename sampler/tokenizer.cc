// SentencePiece training and tokenization through the privately loaded shim (spm_shim.cc), with the
// image specials appended after the vocabulary.
#include "sampler/tokenizer.h"

#include <dlfcn.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <filesystem>
#include <mutex>

#include "cluster/errors.h"
#include "sampler/templates.h"

namespace lcl::sampler {
namespace {

// The shim's C entry points (see spm_shim.cc).
struct ShimApi {
  int (*train)(const char*, const char* const*, int, char*, int) = nullptr;
  void* (*load)(const char*, char*, int) = nullptr;
  void (*free)(void*) = nullptr;
  void (*info)(void*, int*) = nullptr;
  int (*encode)(void*, const char*, int, int*, int, char*, int) = nullptr;
  int (*decode)(void*, const int*, int, char*, int, char*, int) = nullptr;
};

std::string ExecutableDir() {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  return std::filesystem::path(std::string(buf, static_cast<size_t>(n))).parent_path().string();
}

// Candidates: $LCL_SPM_SHIM, the build tree's copy, then beside the executable (an install).
void* OpenShim(std::string& tried) {
  std::vector<std::string> paths;
  if (const char* env = std::getenv("LCL_SPM_SHIM")) paths.push_back(env);
  paths.push_back(LCL_SPM_SHIM_PATH);
  paths.push_back(ExecutableDir() + "/liblcl_spm_shim.so");
  paths.push_back(ExecutableDir() + "/../lib/liblcl_spm_shim.so");
  for (const std::string& p : paths) {
    // RTLD_DEEPBIND: SentencePiece binds to the protobuf it bundles, not to the process's
    // libprotobuf.
    if (void* h = dlmopen(LM_ID_NEWLM, p.c_str(), RTLD_NOW | RTLD_LOCAL)) return h;
    tried += "\n  " + p + ": " + dlerror();
  }
  return nullptr;
}

const ShimApi& Shim() {
  static ShimApi api;
  static std::once_flag once;
  static std::string error;
  std::call_once(once, [] {
    std::string tried;
    void* h = OpenShim(tried);
    if (h == nullptr) {
      error = "cannot load the SentencePiece shim liblcl_spm_shim.so; tried:" + tried +
              "\nbuild the lcl_spm_shim target or set LCL_SPM_SHIM to its path";
      return;
    }
    api.train = reinterpret_cast<decltype(api.train)>(dlsym(h, "lcl_spm_train"));
    api.load = reinterpret_cast<decltype(api.load)>(dlsym(h, "lcl_spm_load"));
    api.free = reinterpret_cast<decltype(api.free)>(dlsym(h, "lcl_spm_free"));
    api.info = reinterpret_cast<decltype(api.info)>(dlsym(h, "lcl_spm_info"));
    api.encode = reinterpret_cast<decltype(api.encode)>(dlsym(h, "lcl_spm_encode"));
    api.decode = reinterpret_cast<decltype(api.decode)>(dlsym(h, "lcl_spm_decode"));
    if (!api.train || !api.load || !api.free || !api.info || !api.encode || !api.decode) {
      error = "liblcl_spm_shim.so lacks an lcl_spm_* entry point; rebuild it with this lcl";
    }
  });
  if (!error.empty()) throw NotBuiltError(error);
  return api;
}

}  // namespace

void TrainTokenizer(const std::vector<std::string>& sentences, int vocab_size, const std::string& model_path) {
  if (sentences.empty()) throw DataError("TrainTokenizer: the corpus is empty; pass prompt text to train on");
  if (vocab_size < 300) {
    // byte fallback alone takes 256 pieces, plus unk/bos/eos/pad.
    throw ConfigError("tokenizer vocab_size=" + std::to_string(vocab_size) +
                      " is below 300 (byte fallback needs 256 pieces plus specials)");
  }
  // SentencePiece writes <prefix>.model and <prefix>.vocab.
  if (model_path.size() <= 6 || model_path.compare(model_path.size() - 6, 6, ".model") != 0) {
    throw ConfigError("tokenizer model_path " + model_path + " must end in .model");
  }
  const std::string prefix = model_path.substr(0, model_path.size() - 6);
  // One thread and no input shuffling or sampling: the same corpus gives the same model file.
  std::string args = "--model_type=bpe --vocab_size=" + std::to_string(vocab_size) + " --model_prefix=" + prefix +
                     " --byte_fallback=true --num_threads=1 --hard_vocab_limit=false"
                     " --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=3 --character_coverage=1.0"
                     " --max_sentence_length=100000 --minloglevel=2 --shuffle_input_sentence=false";
  std::vector<const char*> ptrs;
  for (const std::string& s : sentences) ptrs.push_back(s.c_str());
  char err[1024] = {0};
  if (Shim().train(args.c_str(), ptrs.data(), static_cast<int>(ptrs.size()), err, sizeof(err)) != 0) {
    throw DataError("training the tokenizer into " + model_path + " failed: " + err);
  }
}

std::vector<std::string> DefaultTokenizerCorpus(const std::vector<std::string>& class_names,
                                                const std::vector<std::string>& templates) {
  std::vector<std::string> out = {
      "A chat between a curious human and an artificial intelligence assistant. The assistant "
      "learns new "
      "concepts from the examples and answers the question about the last image.",
      "USER: [BEGIN EXAMPLE] What is in the image <image>? ASSISTANT:",
      "there is \"abc\" in the image. [END EXAMPLE]",
  };
  for (const std::string& t : templates.empty() ? DefaultTemplates() : templates) {
    out.push_back("USER: " + t + " ASSISTANT:");
  }
  for (const std::string& name : class_names) {
    out.push_back("there is \"" + name + "\" in the image. [END EXAMPLE]");
    out.push_back("there is \"" + name + "\" in the image.");
  }
  // A spread of letter sequences so made-up words tokenize into short pieces rather than raw bytes.
  for (int i = 0; i < 26 * 4; ++i) {
    std::string word;
    for (int k = 0; k < 2 + i % 8; ++k) word += static_cast<char>('a' + (i * 7 + k * 11) % 26);
    out.push_back("there is \"" + word + "\" in the image.");
  }
  return out;
}

Tokenizer Tokenizer::Load(const std::string& model_path) {
  const ShimApi& api = Shim();
  char err[1024] = {0};
  void* h = api.load(model_path.c_str(), err, sizeof(err));
  if (h == nullptr) {
    throw DataError("cannot load tokenizer " + model_path + ": " + err +
                    " (expected a SentencePiece .model; make one with `lcl model init`)");
  }
  Tokenizer t;
  t.sp_ = std::shared_ptr<void>(h, api.free);
  int ids[5];
  api.info(h, ids);
  t.sp_size_ = ids[0];
  t.bos_id_ = ids[1];
  t.eos_id_ = ids[2];
  t.pad_id_ = ids[3] >= 0 ? ids[3] : ids[4];  // LLaMA has no pad: LLaVA pads with unk
  return t;
}

std::vector<int> Tokenizer::Encode(const std::string& text) const {
  std::vector<int> ids(text.size() + 16);  // pieces never outnumber bytes (+ a dummy prefix)
  char err[512] = {0};
  int n = Shim().encode(sp_.get(), text.data(), static_cast<int>(text.size()), ids.data(), static_cast<int>(ids.size()),
                        err, sizeof(err));
  if (n < 0) throw DataError("tokenizing \"" + text.substr(0, 60) + "\" failed: " + err);
  if (static_cast<size_t>(n) > ids.size()) {
    ids.resize(static_cast<size_t>(n));
    Shim().encode(sp_.get(), text.data(), static_cast<int>(text.size()), ids.data(), n, err, sizeof(err));
  }
  ids.resize(static_cast<size_t>(n));
  return ids;
}

std::string Tokenizer::Decode(const std::vector<int>& ids) const {
  std::vector<int> text_ids;
  for (int id : ids) {
    if (id >= 0 && id < sp_size_ && id != bos_id_ && id != eos_id_ && id != pad_id_) text_ids.push_back(id);
  }
  std::string out(text_ids.size() * 8 + 16, '\0');
  char err[512] = {0};
  int n = Shim().decode(sp_.get(), text_ids.data(), static_cast<int>(text_ids.size()), out.data(),
                        static_cast<int>(out.size()), err, sizeof(err));
  if (n < 0) throw DataError(std::string("decoding failed: ") + err);
  if (static_cast<size_t>(n) > out.size()) {
    out.resize(static_cast<size_t>(n));
    Shim().decode(sp_.get(), text_ids.data(), static_cast<int>(text_ids.size()), out.data(), n, err, sizeof(err));
  }
  out.resize(static_cast<size_t>(n));
  return out;
}

}  // namespace lcl::sampler
