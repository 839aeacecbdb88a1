// Loading and checking final-question templates.
#include "sampler/templates.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "cluster/errors.h"
#include "sampler/json_fields.h"

namespace lcl::sampler {
namespace {

size_t CountMarkers(const std::string& s) {
  size_t n = 0;
  for (size_t p = s.find(kImageMarker); p != std::string::npos; p = s.find(kImageMarker, p + 1)) ++n;
  return n;
}

}  // namespace

std::vector<std::string> LoadTemplates(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw DataError("cannot open templates file " + path + "; expected a JSON array of strings");
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(in);
  } catch (const nlohmann::json::parse_error& e) {
    throw DataError("templates file " + path + " is not valid JSON (" + e.what() + ")");
  }
  if (!doc.is_array() || doc.empty()) {
    throw DataError("templates file " + path + ": expected a non-empty JSON array of strings, found " +
                    (doc.is_array() ? std::string("an empty array") : internal::JsonTypeName(doc)));
  }
  std::vector<std::string> out;
  for (size_t i = 0; i < doc.size(); ++i) {
    std::string where = "templates file " + path + ": element " + std::to_string(i);
    if (!doc[i].is_string()) {
      throw DataError(where + ": expected a string, found " + internal::JsonTypeName(doc[i]));
    }
    std::string t = doc[i].get<std::string>();
    if (CountMarkers(t) != 1) {
      throw DataError(where + ": expected exactly one \"<image>\", found " + std::to_string(CountMarkers(t)) +
                      " in \"" + t + "\"");
    }
    out.push_back(std::move(t));
  }
  return out;
}

std::vector<std::string> DefaultTemplates() {
  return {
      "Based on the previous examples, what is in the image <image>?",
      "Using the examples above, what do you see in the image <image>?",
      "Given the context, what object is in the image <image>?",
      "From the examples, what would you call the object in the image <image>?",
      "Following the previous examples, what is shown in the image <image>?",
      "With the context above, name what is in the image <image>.",
      "What is in the image <image>, judging by the examples?",
      "Considering the examples, what is the main object in the image <image>?",
  };
}

}  // namespace lcl::sampler
