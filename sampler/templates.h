// Final-question templates for the query turn of an episode: the official ICL.json (a JSON array of
// strings, each with one "<image>") or the project's defaults.
//
//   std::vector<std::string> t = lcl::sampler::LoadTemplates("../shared/data/lcl/ICL.json");
#pragma once

#include <string>
#include <vector>

namespace lcl::sampler {

// The image marker that prompt rendering expands into image-start + patches + image-end tokens.
inline constexpr const char* kImageMarker = "<image>";

// Loads a JSON array of template strings. Throws lcl::DataError naming the file and element when
// the file is not a JSON array of strings or an element does not contain exactly one "<image>".
std::vector<std::string> LoadTemplates(const std::string& path);

// Our own defaults, in the style of the official ones.
std::vector<std::string> DefaultTemplates();

}  // namespace lcl::sampler
