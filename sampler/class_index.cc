// ImageNet root indexing: synset mapping, train/ and val/ images, class split.
#include "sampler/class_index.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cluster/errors.h"
#include "sampler/rng.h"

namespace lcl::sampler {
namespace fs = std::filesystem;
namespace {

std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

bool HasExtension(const fs::path& p, const std::vector<std::string>& exts) {
  std::string ext = p.extension().string();
  return std::find(exts.begin(), exts.end(), ext) != exts.end();
}

// Lists image files directly under `dir` as paths relative to `root`, sorted; throws with the OS
// reason.
std::vector<std::string> ListImages(const fs::path& dir, const fs::path& root, const IndexOptions& options) {
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec) throw DataError("cannot read directory " + dir.string() + ": " + ec.message());
  std::vector<std::string> out;
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) throw DataError("error while listing " + dir.string() + ": " + ec.message());
    if (it->is_regular_file(ec) && HasExtension(it->path(), options.extensions)) {
      out.push_back(fs::relative(it->path(), root).generic_string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<SynsetEntry> SynsetsFromFolders(const fs::path& train) {
  std::error_code ec;
  fs::directory_iterator it(train, ec);
  if (ec) throw DataError("cannot read directory " + train.string() + ": " + ec.message());
  std::vector<std::string> wnids;
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (it->is_directory(ec)) wnids.push_back(it->path().filename().string());
  }
  std::sort(wnids.begin(), wnids.end());
  std::vector<SynsetEntry> out;
  for (size_t i = 0; i < wnids.size(); ++i) out.push_back({int(i + 1), wnids[i], wnids[i], wnids[i]});
  return out;
}

// LOC_val_solution.csv: "ImageId,PredictionString" with the wnid first in PredictionString; also
// accepts plain "image,wnid" lines. Returns image file stem -> wnid.
std::map<std::string, std::string> ReadValSolution(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw DataError("cannot open validation solution " + path + ": " + std::strerror(errno));
  std::map<std::string, std::string> out;
  std::string line;
  size_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    line = Trim(line);
    if (line.empty() || (line_no == 1 && line.rfind("ImageId", 0) == 0)) continue;
    size_t comma = line.find(',');
    if (comma == std::string::npos) {
      throw DataError(path + ":" + std::to_string(line_no) + ": expected \"ImageId,wnid ...\", found \"" +
                      line.substr(0, 80) + "\"");
    }
    std::string image = fs::path(Trim(line.substr(0, comma))).stem().string();
    std::istringstream rest(line.substr(comma + 1));
    std::string wnid;
    rest >> wnid;
    if (wnid.empty()) throw DataError(path + ":" + std::to_string(line_no) + ": no wnid after the comma");
    out[image] = wnid;
  }
  return out;
}

void IndexVal(const fs::path& root, const IndexOptions& options, std::map<std::string, size_t>& by_wnid,
              ImageNetIndex& index) {
  fs::path val = root / "val";
  std::error_code ec;
  if (!fs::is_directory(val, ec)) return;
  std::string solution = options.val_solution;
  if (solution.empty() && fs::exists(root / "LOC_val_solution.csv")) {
    solution = (root / "LOC_val_solution.csv").string();
  }
  if (!solution.empty()) {  // flat val/ labelled by the CSV
    std::map<std::string, std::string> labels = ReadValSolution(solution);
    for (const std::string& rel : ListImages(val, root, options)) {
      auto it = labels.find(fs::path(rel).stem().string());
      if (it == labels.end()) continue;  // unlabelled images are not part of any class
      auto cls = by_wnid.find(it->second);
      if (cls == by_wnid.end()) {
        throw DataError(solution + ": image " + it->first + " has wnid " + it->second +
                        " which the synset mapping does not list");
      }
      index.classes[cls->second].val.push_back(rel);
    }
  }
  for (auto& [wnid, pos] : by_wnid) {  // val/<wnid>/ layout
    if (fs::is_directory(val / wnid, ec)) {
      auto more = ListImages(val / wnid, root, options);
      index.classes[pos].val.insert(index.classes[pos].val.end(), more.begin(), more.end());
    }
  }
}

}  // namespace

std::vector<SynsetEntry> ReadSynsetMapping(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw DataError("cannot open synset mapping " + path + ": " + std::strerror(errno));
  std::vector<SynsetEntry> out;
  std::map<std::string, size_t> seen;
  std::string line;
  size_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    line = Trim(line);
    if (line.empty()) continue;
    size_t space = line.find_first_of(" \t");
    std::string where = path + ":" + std::to_string(line_no);
    if (space == std::string::npos) {
      throw DataError(where +
                      ": expected \"<wnid> <name>[, synonyms]\" (e.g. \"n01440764 tench, Tinca tinca\"),"
                      " found \"" +
                      line.substr(0, 80) + "\"");
    }
    SynsetEntry e;
    e.id = static_cast<int>(out.size() + 1);
    e.wnid = line.substr(0, space);
    e.full_name = Trim(line.substr(space + 1));
    e.name = Trim(e.full_name.substr(0, e.full_name.find(',')));
    if (!seen.emplace(e.wnid, line_no).second) {
      throw DataError(where + ": wnid " + e.wnid + " already listed on line " + std::to_string(seen[e.wnid]));
    }
    out.push_back(std::move(e));
  }
  if (out.empty()) throw DataError(path + ": no synset lines");
  return out;
}

void WriteSynsetMapping(const std::vector<SynsetEntry>& entries, const std::string& path) {
  std::ofstream out(path, std::ios::trunc);
  for (const SynsetEntry& e : entries) out << e.wnid << " " << e.full_name << "\n";
  out.flush();
  if (!out) throw DataError("cannot write synset mapping " + path);
}

ImageNetIndex IndexImageNetRoot(const std::string& root_str, const IndexOptions& options) {
  fs::path root(root_str);
  std::error_code ec;
  if (!fs::is_directory(root / "train", ec)) {
    throw DataError("ImageNet root " + root_str + " has no train/ directory" +
                    (ec ? " (" + ec.message() + ")" : std::string()) +
                    "; expected train/<wnid>/*.JPEG (make one with `lcl data synth`)");
  }
  std::vector<SynsetEntry> synsets;
  if (!options.synset_path.empty()) {
    synsets = ReadSynsetMapping(options.synset_path);
  } else if (fs::exists(root / "LOC_synset_mapping.txt")) {
    synsets = ReadSynsetMapping((root / "LOC_synset_mapping.txt").string());
  } else {
    synsets = SynsetsFromFolders(root / "train");
  }
  ImageNetIndex index;
  index.root = root_str;
  std::map<std::string, size_t> by_wnid;
  for (SynsetEntry& s : synsets) {
    by_wnid[s.wnid] = index.classes.size();
    index.classes.push_back({std::move(s), {}, {}});
  }
  for (fs::directory_iterator it(root / "train", ec), end; !ec && it != end; it.increment(ec)) {
    if (!it->is_directory()) continue;
    std::string wnid = it->path().filename().string();
    auto cls = by_wnid.find(wnid);
    if (cls == by_wnid.end()) {
      throw DataError("train/" + wnid + " under " + root_str +
                      " is not in the synset mapping; add it there or remove the folder");
    }
    index.classes[cls->second].train = ListImages(it->path(), root, options);
  }
  if (ec) throw DataError("cannot read directory " + (root / "train").string() + ": " + ec.message());
  IndexVal(root, options, by_wnid, index);
  for (ClassImages& c : index.classes) {
    std::sort(c.val.begin(), c.val.end());
    index.num_train += c.train.size();
    index.num_val += c.val.size();
  }
  // An index of classes without a single image would only fail later, as "no images" of one class or another.
  if (index.num_train + index.num_val == 0) {
    throw DataError("ImageNet root " + root_str + " holds no images: no train/<wnid>/ folder (nor val/) has an " +
                    "image file; expected train/<wnid>/*.JPEG (make one with `lcl data synth`)");
  }
  return index;
}

ClassSplit SplitClasses(size_t num_classes, size_t num_test, uint64_t seed) {
  if (num_test >= num_classes) {
    throw ConfigError("class split: num_test=" + std::to_string(num_test) + " must be below the " +
                      std::to_string(num_classes) + " classes");
  }
  std::vector<int> ids(num_classes);
  for (size_t i = 0; i < num_classes; ++i) ids[i] = static_cast<int>(i + 1);
  CounterRng rng({seed, 0x73706c6974ULL});  // "split"
  rng.Shuffle(ids);
  ClassSplit split;
  split.test_ids.assign(ids.begin(), ids.begin() + num_test);
  split.train_ids.assign(ids.begin() + num_test, ids.end());
  std::sort(split.test_ids.begin(), split.test_ids.end());
  std::sort(split.train_ids.begin(), split.train_ids.end());
  return split;
}

void WriteIndexJson(const ImageNetIndex& index, const ClassSplit& split, const std::string& path) {
  nlohmann::json classes = nlohmann::json::array();
  for (const ClassImages& c : index.classes) {
    classes.push_back({{"id", c.synset.id},
                       {"wnid", c.synset.wnid},
                       {"name", c.synset.name},
                       {"train", c.train.size()},
                       {"val", c.val.size()}});
  }
  nlohmann::json doc = {
      {"root", index.root},           {"num_classes", index.classes.size()},
      {"num_train", index.num_train}, {"num_val", index.num_val},
      {"classes", classes},           {"split", {{"train", split.train_ids}, {"test", split.test_ids}}}};
  std::ofstream out(path, std::ios::trunc);
  out << doc.dump(1) << "\n";
  out.flush();
  if (!out) throw DataError("cannot write index " + path + "; check that its directory exists");
}

}  // namespace lcl::sampler
