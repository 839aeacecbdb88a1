// The tokenizer in a build without SentencePiece: every entry point says how to get it.
#include "cluster/errors.h"
#include "sampler/tokenizer.h"

namespace lcl::sampler {
namespace {
[[noreturn]] void Fail() {
  throw NotBuiltError(
      "this lcl was built without SentencePiece; apt-get install libsentencepiece-dev and "
      "reconfigure with -DLCL_WITH_SENTENCEPIECE=ON");
}
}  // namespace

void TrainTokenizer(const std::vector<std::string>&, int, const std::string&) { Fail(); }
std::vector<std::string> DefaultTokenizerCorpus(const std::vector<std::string>&, const std::vector<std::string>&) {
  Fail();
}
Tokenizer Tokenizer::Load(const std::string&) { Fail(); }
std::vector<int> Tokenizer::Encode(const std::string&) const { Fail(); }
std::string Tokenizer::Decode(const std::vector<int>&) const { Fail(); }

}  // namespace lcl::sampler
