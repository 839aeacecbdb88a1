// ISEKAI-style evaluation files (the LCL paper's ISEKAI-10 and ISEKAI-pair): one 2-way episode per jsonl line,
// with the query image, a support list per side, the two labels and the query's answer; and the episodes built
// from them at a chosen shot.
//
//   lcl::sampler::IsekaiFile file = lcl::sampler::ReadIsekaiFile("isekai_pair.jsonl", "");  // paths: file's dir
//   lcl::sampler::IsekaiEpisodes episodes(file, /*shot=*/4, /*seed=*/7);
//   lcl::sampler::Episode e = episodes.Build(0);  // line 1: first 4 images of each list, shuffled
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sampler/episode.h"

namespace lcl::sampler {

// One line. Image paths are kept as written (relative to IsekaiFile::image_root unless absolute).
struct IsekaiItem {
  size_t line = 0;                         // 1-based line in the file
  std::string query;                       // "image_name"
  std::vector<std::string> positive_list;  // "positive_list": support images labelled positive_prompt
  std::vector<std::string> negative_list;  // "negative_list": support images labelled negative_prompt
  std::string positive_prompt;             // "positive_promt" (the official spelling of the key)
  std::string negative_prompt;             // "negative_promt"
  std::string label_name;                  // "label_name": the query's answer, one of the two prompts
  bool query_in_positive = true;           // label_name is positive_prompt (else negative_prompt)
};

struct IsekaiFile {
  std::string path;
  std::string image_root;  // base of relative image paths
  std::vector<IsekaiItem> items;
};

// Reads an ISEKAI-style jsonl file; blank lines are skipped. `image_root` empty = the file's directory.
// Throws lcl::DataError "path:line: field "...": problem" on a malformed line, a missing or mistyped key, an empty
// support list, equal labels, or a label_name that is neither label; and on a file with no lines.
IsekaiFile ReadIsekaiFile(const std::string& path, const std::string& image_root);

// The episodes of an ISEKAI file at one shot: episode i is line i. The query is image_name; its side (the one
// label_name names) is the positive side of the episode, labelled label_name; the support is the first `shot`
// images of each list (the query's own path left out if it is listed), all of a list when it is shorter,
// shuffled by a seeded draw keyed by (seed, line, shot). Keeps a reference to `file`.
class IsekaiEpisodes {
 public:
  IsekaiEpisodes(const IsekaiFile& file, int shot, uint64_t seed, std::vector<std::string> templates = {});

  uint64_t size() const { return file_.items.size(); }
  // Pure: depends only on (file, shot, seed, index). Throws ConfigError past size().
  Episode Build(uint64_t index) const;
  // The images of the side an ImageRef::class_pos names (2i: line i's query side, 2i+1: its other side): where
  // a bad image's replacement comes from.
  const std::vector<std::string>& Pool(int class_pos) const;
  // Lines with fewer than `shot` support images on a side at this shot (they are evaluated with what they have).
  uint64_t short_lines() const { return short_lines_; }

 private:
  const IsekaiFile& file_;
  int shot_;
  uint64_t seed_;
  std::vector<std::string> templates_;
  uint64_t short_lines_ = 0;
};

}  // namespace lcl::sampler
