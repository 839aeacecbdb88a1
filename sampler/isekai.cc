// ISEKAI-style evaluation files and their episodes; see isekai.h.
#include "sampler/isekai.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "cluster/errors.h"
#include "cluster/log.h"
#include "sampler/json_fields.h"
#include "sampler/rng.h"
#include "sampler/templates.h"

namespace lcl::sampler {
namespace fs = std::filesystem;
namespace {

constexpr uint64_t kIsekaiStream = 0x6973656b6169ULL;  // "isekai": the support order and the template

std::string Folded(const std::string& s) {  // trimmed, lower case: how labels are compared
  const size_t b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  std::string out = s.substr(b, s.find_last_not_of(" \t") - b + 1);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string NonEmptyString(const internal::JsonLine& line, const std::string& field) {
  std::string v = line.String(field);
  if (Folded(v).empty()) line.Fail(field, "is empty; expected a non-empty string");
  return v;
}

std::vector<std::string> SupportList(const internal::JsonLine& line, const std::string& field) {
  std::vector<std::string> v = line.StringList(field);
  if (v.empty()) line.Fail(field, "is empty; each side needs at least one support image path");
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i].empty()) line.Fail(field, "element " + std::to_string(i) + " is an empty path");
  }
  return v;
}

IsekaiItem ParseItem(const internal::JsonLine& line) {
  IsekaiItem it;
  it.line = line.line_no;
  it.query = NonEmptyString(line, "image_name");
  it.positive_list = SupportList(line, "positive_list");
  it.negative_list = SupportList(line, "negative_list");
  it.positive_prompt = NonEmptyString(line, "positive_promt");
  it.negative_prompt = NonEmptyString(line, "negative_promt");
  it.label_name = NonEmptyString(line, "label_name");
  const std::string pos = Folded(it.positive_prompt), neg = Folded(it.negative_prompt);
  if (pos == neg) {
    line.Fail("negative_promt", "'" + it.negative_prompt + "' equals positive_promt; the two labels must differ");
  }
  const std::string label = Folded(it.label_name);
  if (label != pos && label != neg) {
    line.Fail("label_name", "'" + it.label_name + "' is neither positive_promt '" + it.positive_prompt +
                                "' nor negative_promt '" + it.negative_prompt + "'; it must name the query's side");
  }
  it.query_in_positive = label == pos;
  return it;
}

// The first `shot` paths of `list`, leaving out `query` (a query shown as its own example answers itself).
std::vector<std::string> FirstSupport(const std::vector<std::string>& list, const std::string& query, size_t shot) {
  const fs::path q = fs::path(query).lexically_normal();
  std::vector<std::string> out;
  for (size_t i = 0; i < list.size() && out.size() < shot; ++i) {
    if (fs::path(list[i]).lexically_normal() != q) out.push_back(list[i]);
  }
  return out;
}

size_t SupportAvailable(const std::vector<std::string>& list, const std::string& query) {
  return FirstSupport(list, query, list.size()).size();
}

}  // namespace

IsekaiFile ReadIsekaiFile(const std::string& path, const std::string& image_root) {
  std::ifstream in(path);
  if (!in) {
    throw DataError("cannot open ISEKAI file " + path + ": " + std::strerror(errno) +
                    "; set eval.isekai to an ISEKAI-style jsonl file");
  }
  IsekaiFile file;
  file.path = path;
  file.image_root = image_root;
  if (file.image_root.empty()) {
    const fs::path dir = fs::path(path).parent_path();
    file.image_root = dir.empty() ? "." : dir.string();
  }
  internal::ForEachJsonLine(in, path, [&](const internal::JsonLine& line) { file.items.push_back(ParseItem(line)); });
  if (file.items.empty()) {
    throw DataError(path +
                    ": no ISEKAI lines; expected one JSON object per line with image_name, positive_list, "
                    "negative_list, positive_promt, negative_promt and label_name");
  }
  return file;
}

IsekaiEpisodes::IsekaiEpisodes(const IsekaiFile& file, int shot, uint64_t seed, std::vector<std::string> templates)
    : file_(file), shot_(shot), seed_(seed), templates_(std::move(templates)) {
  if (shot < 0) throw ConfigError("eval shot=" + std::to_string(shot) + " must be >= 0");
  if (templates_.empty()) templates_ = DefaultTemplates();
  for (const IsekaiItem& it : file_.items) {
    const size_t need = static_cast<size_t>(shot_);
    if (SupportAvailable(it.positive_list, it.query) < need || SupportAvailable(it.negative_list, it.query) < need) {
      ++short_lines_;
    }
  }
}

Episode IsekaiEpisodes::Build(uint64_t index) const {
  if (index >= size()) {
    throw ConfigError("ISEKAI episode " + std::to_string(index) + " is past the " + std::to_string(size()) +
                      " lines of " + file_.path);
  }
  const IsekaiItem& it = file_.items[index];
  const std::vector<std::string>& own = it.query_in_positive ? it.positive_list : it.negative_list;
  const std::vector<std::string>& other = it.query_in_positive ? it.negative_list : it.positive_list;
  Episode e;
  e.index = index;
  e.policy = "2way_isekai";
  e.positive_class = static_cast<int>(2 * index);  // Pool() decodes these
  e.negative_class = static_cast<int>(2 * index + 1);
  e.positive_label = it.query_in_positive ? it.positive_prompt : it.negative_prompt;
  e.negative_label = it.query_in_positive ? it.negative_prompt : it.positive_prompt;
  const std::vector<std::string> pos = FirstSupport(own, it.query, static_cast<size_t>(shot_));
  const std::vector<std::string> neg = FirstSupport(other, it.query, static_cast<size_t>(shot_));
  e.shot = static_cast<int>(std::max(pos.size(), neg.size()));  // what the prompt shows per side
  // ISEKAI files name no classes: the class names stay empty.
  for (const std::string& p : pos) e.examples.push_back({{p, e.positive_class}, e.positive_label, true, ""});
  for (const std::string& p : neg) e.examples.push_back({{p, e.negative_class}, e.negative_label, false, ""});
  CounterRng rng({seed_, index, static_cast<uint64_t>(shot_), kIsekaiStream});
  rng.Shuffle(e.examples);
  e.query = {it.query, e.positive_class};
  e.query_positive = true;
  e.query_label = e.positive_label;
  e.question = templates_[rng.Below(templates_.size())];
  return e;
}

const std::vector<std::string>& IsekaiEpisodes::Pool(int class_pos) const {
  CHECK_GE(class_pos, 0);
  const IsekaiItem& it = file_.items.at(static_cast<size_t>(class_pos / 2));
  const bool query_side = class_pos % 2 == 0;
  return query_side == it.query_in_positive ? it.positive_list : it.negative_list;
}

}  // namespace lcl::sampler
