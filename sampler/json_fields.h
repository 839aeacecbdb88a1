// Typed field access on parsed jsonl lines: every mismatch becomes an lcl::DataError naming the
// file, line, field, what was expected and what was found.
//
//   JsonLine line{path, line_no, json};
//   std::string id = line.String("class_id");
#pragma once

#include <functional>
#include <istream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace lcl::sampler::internal {

// Short name of a JSON value's type for error messages ("string", "number", "array", ...).
const char* JsonTypeName(const nlohmann::json& v);

// Parses one line; throws DataError "path:line N: not valid JSON (...)".
nlohmann::json ParseJsonLine(const std::string& text, const std::string& path, size_t line_no);

struct JsonLine {
  const std::string& path;
  size_t line_no;
  const nlohmann::json& obj;

  [[noreturn]] void Fail(const std::string& field, const std::string& problem) const;
  // A string field; an integer is accepted as its decimal text (class ids are sometimes written
  // bare).
  std::string String(const std::string& field) const;
  std::vector<std::string> StringList(const std::string& field) const;
  const nlohmann::json& Array(const std::string& field) const;
};

// Calls `fn` with every non-blank line of a jsonl stream, parsed (blank lines are harmless; a bad one throws as
// ParseJsonLine does).
void ForEachJsonLine(std::istream& in, const std::string& path, const std::function<void(const JsonLine&)>& fn);

}  // namespace lcl::sampler::internal
