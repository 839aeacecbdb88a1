// Typed field access on jsonl lines with errors that name file, line and field.
#include "sampler/json_fields.h"

#include "cluster/errors.h"

namespace lcl::sampler::internal {

const char* JsonTypeName(const nlohmann::json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "boolean";
  if (v.is_number()) return "number";
  if (v.is_string()) return "string";
  if (v.is_array()) return "array";
  return "object";
}

void ForEachJsonLine(std::istream& in, const std::string& path, const std::function<void(const JsonLine&)>& fn) {
  std::string text;
  size_t line_no = 0;
  while (std::getline(in, text)) {
    ++line_no;
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    const nlohmann::json obj = ParseJsonLine(text, path, line_no);
    fn(JsonLine{path, line_no, obj});
  }
}

nlohmann::json ParseJsonLine(const std::string& text, const std::string& path, size_t line_no) {
  try {
    nlohmann::json obj = nlohmann::json::parse(text);
    if (!obj.is_object()) {
      throw DataError(path + ":" + std::to_string(line_no) + ": expected a JSON object per line, found " +
                      JsonTypeName(obj));
    }
    return obj;
  } catch (const nlohmann::json::parse_error& e) {
    throw DataError(path + ":" + std::to_string(line_no) + ": not valid JSON (" + e.what() +
                    "); each line must be one JSON object");
  }
}

void JsonLine::Fail(const std::string& field, const std::string& problem) const {
  throw DataError(path + ":" + std::to_string(line_no) + ": field \"" + field + "\": " + problem);
}

std::string JsonLine::String(const std::string& field) const {
  auto it = obj.find(field);
  if (it == obj.end()) Fail(field, "missing (expected a string)");
  if (it->is_string()) return it->get<std::string>();
  if (it->is_number_integer()) return std::to_string(it->get<long long>());
  Fail(field, std::string("expected a string, found ") + JsonTypeName(*it));
}

const nlohmann::json& JsonLine::Array(const std::string& field) const {
  auto it = obj.find(field);
  if (it == obj.end()) Fail(field, "missing (expected an array)");
  if (!it->is_array()) Fail(field, std::string("expected an array, found ") + JsonTypeName(*it));
  return *it;
}

std::vector<std::string> JsonLine::StringList(const std::string& field) const {
  const nlohmann::json& arr = Array(field);
  std::vector<std::string> out;
  out.reserve(arr.size());
  for (size_t i = 0; i < arr.size(); ++i) {
    if (!arr[i].is_string()) {
      Fail(field, "element " + std::to_string(i) + ": expected a string, found " + JsonTypeName(arr[i]));
    }
    out.push_back(arr[i].get<std::string>());
  }
  return out;
}

}  // namespace lcl::sampler::internal
