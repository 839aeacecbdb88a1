// Single-image instruction conversations in LLaVA's JSON format, the other half of LCL-Mix (docs/data.md):
//   [{"id": "...", "image": "train/n01440764/x.JPEG",
//     "conversations": [{"from": "human", "value": "<image>\nWhat is this?"}, {"from": "gpt", "value": "A tench."}]}]
// A JSON array (LLaVA's files) or JSON lines, one record each. Every record is checked when the file is read: one
// image, exactly one "<image>" (in a human turn), turns alternating human then gpt and ending with gpt.
//
//   lcl::sampler::InstructFile f = lcl::sampler::InstructFile::Read("llava_instruct.json", /*image_root=*/"");
//   const lcl::sampler::InstructRecord& r = f.records()[0];  // r.image, r.turns[0].user, r.turns[0].assistant
#pragma once

#include <string>
#include <vector>

#include "sampler/episode.h"

namespace lcl::sampler {

struct InstructRecord {
  std::string id;     // the record's "id" when it has one, else its position
  std::string image;  // as ImageLoader takes it: relative to the data root, or absolute
  std::vector<Turn> turns;
};

class InstructFile {
 public:
  // Reads and checks every record. image_root non-empty: relative "image" paths are taken under it (made absolute
  // when it is). Throws DataError "path: record N (id X): reason; fix" for malformed JSON, a record that is not an
  // object, no or an empty "image", a missing or empty "conversations", an unknown "from" (only human and gpt), turns
  // out of order, no "<image>" or more than one, "<image>" in an answer; and for a missing, unreadable or empty file.
  static InstructFile Read(const std::string& path, const std::string& image_root = "");

  const std::string& path() const { return path_; }
  const std::vector<InstructRecord>& records() const { return records_; }
  size_t size() const { return records_.size(); }
  // Every record's image, in record order: the pool a bad image is replaced from.
  const std::vector<std::string>& images() const { return images_; }

 private:
  std::string path_;
  std::vector<InstructRecord> records_;
  std::vector<std::string> images_;
};

}  // namespace lcl::sampler
