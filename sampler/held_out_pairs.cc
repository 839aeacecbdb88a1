// Held-out classes of an index as 2-way evaluation pairs; see held_out_pairs.h.
#include "sampler/held_out_pairs.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "cluster/errors.h"
#include "cluster/log.h"
#include "sampler/class_index.h"

namespace lcl::sampler {
namespace {

constexpr const char* kRemake = "; make the index with `lcl data index --root ROOT --split SPLIT --out FILE`";

nlohmann::json ReadIndexDoc(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw DataError("cannot open index " + path + ": " + std::strerror(errno) + "; set eval.index");
  nlohmann::json doc = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) throw DataError(path + ": not a JSON object" + kRemake);
  if (!doc.contains("split") || !doc["split"].is_object() || !doc["split"].contains("test") ||
      !doc["split"]["test"].is_array()) {
    throw DataError(path + ": no \"split\": {\"test\": [class ids]} list" + kRemake);
  }
  if (!doc.contains("classes") || !doc["classes"].is_array()) {
    throw DataError(path + ": no \"classes\" list" + kRemake);
  }
  return doc;
}

struct IndexClass {
  std::string wnid;
  std::string name;
};

// id -> (wnid, name) from the index's "classes" entries.
std::map<int, IndexClass> IndexClasses(const nlohmann::json& doc, const std::string& path) {
  std::map<int, IndexClass> out;
  for (size_t i = 0; i < doc["classes"].size(); ++i) {
    const nlohmann::json& c = doc["classes"][i];
    if (!c.is_object() || !c.contains("id") || !c["id"].is_number_integer() || !c.contains("wnid") ||
        !c["wnid"].is_string() || !c.contains("name") || !c["name"].is_string()) {
      throw DataError(path + ": classes[" + std::to_string(i) + "] needs an integer \"id\" and string \"wnid\" and " +
                      "\"name\", found " + c.dump().substr(0, 120) + kRemake);
    }
    out[c["id"].get<int>()] = {c["wnid"].get<std::string>(), c["name"].get<std::string>()};
  }
  return out;
}

// The support and query images of one held-out class (see the header for the rule).
TestClass ClassImagesAsTestClass(int id, const IndexClass& ic, const ClassImages& images, const std::string& path) {
  TestClass t;
  t.class_id = std::to_string(id);
  t.class_name = ic.name;
  const std::vector<std::string>& train = images.train;
  if (!images.val.empty()) {
    t.context_samples = train;
    t.test_samples = images.val;
  } else {
    const long half = static_cast<long>(train.size() / 2);
    t.context_samples.assign(train.begin(), train.begin() + half);
    t.test_samples.assign(train.begin() + half, train.end());
  }
  if (t.context_samples.empty() || t.test_samples.empty()) {
    throw DataError(path + ": held-out class " + t.class_id + " (" + ic.wnid + ", " + ic.name + ") has " +
                    std::to_string(train.size()) + " train and " + std::to_string(images.val.size()) +
                    " val images; evaluation needs support and query images (at least 2 train images, or 1 train "
                    "and 1 val); add images or move the class to the train split");
  }
  return t;
}

}  // namespace

HeldOutPairs ReadHeldOutPairs(const std::string& index_path, const std::string& image_root) {
  const nlohmann::json doc = ReadIndexDoc(index_path);
  HeldOutPairs out;
  out.index_path = index_path;
  out.image_root = image_root;
  if (out.image_root.empty() && doc.contains("root") && doc["root"].is_string()) {
    out.image_root = doc["root"].get<std::string>();
  }
  std::error_code ec;
  if (out.image_root.empty() || !std::filesystem::is_directory(out.image_root, ec)) {
    throw DataError(index_path + ": image root '" + out.image_root + "' " +
                    (image_root.empty() ? "(the index's \"root\") " : "(eval.image_root) ") +
                    "is not a directory; set eval.image_root to the ImageNet-style root the index was made from");
  }
  const std::map<int, IndexClass> classes = IndexClasses(doc, index_path);
  // The tree is walked again because the index keeps image counts, not lists.
  const ImageNetIndex tree = IndexImageNetRoot(out.image_root, {});
  std::map<std::string, const ClassImages*> by_wnid;
  for (const ClassImages& c : tree.classes) by_wnid[c.synset.wnid] = &c;

  for (const nlohmann::json& v : doc["split"]["test"]) {
    if (!v.is_number_integer()) {
      throw DataError(index_path + ": split.test holds " + v.dump() + ", not an integer class id" + kRemake);
    }
    const int id = v.get<int>();
    auto ic = classes.find(id);
    if (ic == classes.end()) {
      throw DataError(index_path + ": split.test class " + std::to_string(id) + " is not in its \"classes\" list" +
                      kRemake);
    }
    auto images = by_wnid.find(ic->second.wnid);
    if (images == by_wnid.end()) {
      throw DataError(index_path + ": held-out class " + std::to_string(id) + " (" + ic->second.wnid +
                      ") has no train/" + ic->second.wnid + " folder under " + out.image_root +
                      "; the index was made from another tree (set eval.image_root, or index this root again)");
    }
    out.classes.push_back(ClassImagesAsTestClass(id, ic->second, *images->second, index_path));
  }
  if (out.classes.size() % 2 != 0) {
    out.dropped_class_id = out.classes.back().class_id;
    LOG(WARNING) << index_path << ": " << out.classes.size() << " held-out classes, an odd number; the last ("
                 << out.dropped_class_id << ", " << out.classes.back().class_name
                 << ") has no partner and is left out of the 2-way evaluation";
    out.classes.pop_back();
  }
  if (out.classes.size() < 2) {
    throw DataError(index_path + ": " + std::to_string(doc["split"]["test"].size()) +
                    " held-out (split.test) classes; 2-way evaluation needs at least 2; give a split that holds "
                    "out more classes (`lcl data index --test-classes N` or --split FILE)");
  }
  return out;
}

}  // namespace lcl::sampler
