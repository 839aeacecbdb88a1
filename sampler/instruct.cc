// LLaVA-format instruction files: parsing and the checks every record passes before a run starts.
#include "sampler/instruct.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cluster/errors.h"
#include "sampler/json_fields.h"
#include "sampler/templates.h"

namespace lcl::sampler {
namespace {

size_t CountOf(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

// `where` is "path: record N" or "path:line N"; the id is added once known.
InstructRecord ParseRecord(const nlohmann::json& obj, const std::string& where, size_t position,
                           const std::string& image_root) {
  auto fail = [&](const std::string& id, const std::string& problem) {
    throw DataError(where + (id.empty() ? "" : " (id " + id + ")") + ": " + problem);
  };
  if (!obj.is_object()) {
    fail("", std::string("expected an object {\"image\": ..., \"conversations\": [...]}, found ") +
                 internal::JsonTypeName(obj));
  }
  InstructRecord r;
  auto id = obj.find("id");
  if (id != obj.end() && id->is_string()) r.id = id->get<std::string>();
  if (id != obj.end() && id->is_number_integer()) r.id = std::to_string(id->get<long long>());
  if (r.id.empty()) r.id = std::to_string(position);
  auto image = obj.find("image");
  if (image == obj.end() || !image->is_string() || image->get<std::string>().empty()) {
    fail(r.id, image == obj.end() ? "no \"image\": LCL-Mix takes single-image conversations only; drop text-only "
                                    "records from the file"
                                  : "\"image\" must be a non-empty string (a path under the image root)");
  }
  r.image = image->get<std::string>();
  if (!image_root.empty() && r.image[0] != '/') r.image = (std::filesystem::absolute(image_root) / r.image).string();
  auto conv = obj.find("conversations");
  if (conv == obj.end() || !conv->is_array() || conv->empty()) {
    fail(r.id, "\"conversations\" must be a non-empty array of {\"from\": \"human\"|\"gpt\", \"value\": ...}");
  }
  size_t images = 0;
  for (size_t i = 0; i < conv->size(); ++i) {
    const nlohmann::json& m = (*conv)[i];
    const std::string at = "conversations[" + std::to_string(i) + "]";
    if (!m.is_object() || !m.contains("from") || !m["from"].is_string() || !m.contains("value") ||
        !m["value"].is_string()) {
      fail(r.id, at + " must be an object with string fields \"from\" and \"value\"");
    }
    const std::string from = m["from"].get<std::string>();
    const std::string value = m["value"].get<std::string>();
    const bool human = i % 2 == 0;
    if (from != "human" && from != "gpt") {
      fail(r.id, at + ": unknown \"from\": \"" + from + "\" (use human | gpt)");
    }
    if ((from == "human") != human) {
      fail(r.id, at + ": expected \"" + (human ? "human" : "gpt") + "\", found \"" + from +
                     "\"; turns alternate human, gpt, human, gpt, ...");
    }
    const size_t markers = CountOf(value, kImageMarker);
    if (!human && markers > 0) fail(r.id, at + ": an answer (gpt) holds \"<image>\"; only a human turn may");
    images += markers;
    if (human) {
      r.turns.push_back({value, ""});
    } else {
      r.turns.back().assistant = value;
    }
  }
  if (conv->size() % 2 != 0) fail(r.id, "the last turn is a human one with no gpt answer; end with a gpt turn");
  if (images != 1) {
    fail(r.id, std::to_string(images) + " \"<image>\" markers in the human turns; a record needs exactly one (" +
                   (images == 0 ? "put \"<image>\\n\" before the first question" : "LCL-Mix takes one image each") +
                   ")");
  }
  return r;
}

}  // namespace

InstructFile InstructFile::Read(const std::string& path, const std::string& image_root) {
  std::ifstream in(path);
  if (!in) {
    throw DataError("instruction file '" + path +
                    "' cannot be opened; check data.mix_files (`lcl data synth` writes a LLaVA-format "
                    "llava_instruct.json)");
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  InstructFile f;
  f.path_ = path;
  const size_t first = text.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) throw DataError(path + ": the instruction file is empty");
  if (text[first] == '[') {
    nlohmann::json all;
    try {
      all = nlohmann::json::parse(text);
    } catch (const nlohmann::json::parse_error& e) {
      throw DataError(path + ": not valid JSON (" + e.what() +
                      "); a LLaVA-format file is one JSON array of records (or JSON lines, one record each)");
    }
    for (size_t i = 0; i < all.size(); ++i) {
      f.records_.push_back(ParseRecord(all[i], path + ": record " + std::to_string(i), i, image_root));
    }
  } else {
    std::istringstream lines(text);
    std::string line;
    size_t line_no = 0;
    while (std::getline(lines, line)) {
      ++line_no;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      const nlohmann::json obj = internal::ParseJsonLine(line, path, line_no);
      f.records_.push_back(ParseRecord(obj, path + ":" + std::to_string(line_no), f.records_.size(), image_root));
    }
  }
  if (f.records_.empty()) throw DataError(path + ": the instruction file holds no records");
  for (const InstructRecord& r : f.records_) f.images_.push_back(r.image);
  return f;
}

}  // namespace lcl::sampler
