// Reading and writing the official train/test pairs jsonl files.
#include "sampler/pairs_file.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <unordered_map>
#include <unordered_set>

#include "cluster/errors.h"
#include "sampler/json_fields.h"

namespace lcl::sampler {
namespace {

using internal::JsonLine;

// `official`: the official release's file of that kind, named in the hint.
std::ifstream OpenForRead(const std::string& path, const char* what, const char* official) {
  std::ifstream in(path);
  if (!in) {
    throw DataError("cannot open " + std::string(what) + " " + path +
                    " for reading; check the path (the official file is " + official + ")");
  }
  return in;
}

std::ofstream OpenForWrite(const std::string& path) {
  std::ofstream out(path, std::ios::trunc);
  if (!out) throw DataError("cannot open " + path + " for writing; check that its directory exists");
  return out;
}

void CheckWritten(std::ofstream& out, const std::string& path) {
  out.flush();
  if (!out) throw DataError("writing " + path + " failed (disk full or no permission?)");
}

ClassPairs ParseClassLine(const JsonLine& line) {
  ClassPairs c;
  c.class_id = line.String("class_id");
  c.class_name = line.String("class_name");
  c.samples = line.StringList("samples");
  const nlohmann::json& nbrs = line.Array("neighbors");
  for (size_t j = 0; j < nbrs.size(); ++j) {
    const nlohmann::json& n = nbrs[j];
    bool ok = n.is_array() && n.size() == 3 && (n[0].is_string() || n[0].is_number_integer()) && n[1].is_string() &&
              n[2].is_string();
    if (!ok) {
      line.Fail("neighbors", "element " + std::to_string(j) +
                                 ": expected [class_id, class_name, image_path] (3 strings), found " +
                                 n.dump().substr(0, 120));
    }
    std::string id = n[0].is_string() ? n[0].get<std::string>() : std::to_string(n[0].get<long long>());
    c.neighbors.push_back({id, n[1].get<std::string>(), n[2].get<std::string>()});
  }
  return c;
}

}  // namespace

PairsTable PairsTable::Read(const std::string& path) {
  std::ifstream in = OpenForRead(path, "pairs file", "train900_pairs.jsonl");
  std::vector<ClassPairs> classes;
  std::vector<size_t> lines;
  internal::ForEachJsonLine(in, path, [&](const JsonLine& line) {
    classes.push_back(ParseClassLine(line));
    lines.push_back(line.line_no);
  });
  if (classes.empty()) throw DataError(path + ": no class lines; expected one JSON object per class");
  return Build(std::move(classes), path, lines);
}

PairsTable PairsTable::FromClasses(std::vector<ClassPairs> classes, const std::string& origin) {
  return Build(std::move(classes), origin, {});
}

PairsTable PairsTable::Build(std::vector<ClassPairs> classes, const std::string& origin,
                             const std::vector<size_t>& lines) {
  // "file:line N" when read from a file, "origin: class N" when built in memory.
  auto where = [&](size_t i) {
    std::string at =
        lines.empty() ? origin + ": class " + std::to_string(i + 1) : origin + ":" + std::to_string(lines[i]);
    return at + " (class_id \"" + classes[i].class_id + "\")";
  };
  PairsTable t;
  std::unordered_map<std::string, int> pos;
  for (size_t i = 0; i < classes.size(); ++i) {
    const ClassPairs& c = classes[i];
    if (!pos.emplace(c.class_id, static_cast<int>(i)).second) {
      throw DataError(where(i) + ": duplicate class_id; each class must appear on exactly one line");
    }
    if (c.samples.empty()) throw DataError(where(i) + ": field \"samples\" is empty; need at least one image");
  }
  t.neighbor_index_.resize(classes.size());
  for (size_t i = 0; i < classes.size(); ++i) {
    for (size_t j = 0; j < classes[i].neighbors.size(); ++j) {
      const Neighbor& n = classes[i].neighbors[j];
      auto it = pos.find(n.class_id);
      if (it == pos.end()) {
        throw DataError(where(i) + ": field \"neighbors\" element " + std::to_string(j) + " names unknown class_id \"" +
                        n.class_id + "\" (" + n.class_name +
                        "); every neighbour must be a class with its own line in the same file, because "
                        "negative images are drawn from its samples. Remove the entry or add the class.");
      }
      if (it->second == static_cast<int>(i)) {
        throw DataError(where(i) + ": lists itself as neighbour " + std::to_string(j) +
                        "; a class cannot be its own hard negative");
      }
      t.neighbor_index_[i].push_back(it->second);
    }
  }
  t.classes_ = std::move(classes);
  return t;
}

void PairsTable::Write(const std::string& path) const {
  std::ofstream out = OpenForWrite(path);
  for (const ClassPairs& c : classes_) {
    nlohmann::json nbrs = nlohmann::json::array();
    for (const Neighbor& n : c.neighbors) nbrs.push_back({n.class_id, n.class_name, n.image_path});
    nlohmann::json obj = {
        {"class_id", c.class_id}, {"class_name", c.class_name}, {"samples", c.samples}, {"neighbors", nbrs}};
    out << obj.dump() << "\n";
  }
  CheckWritten(out, path);
}

int PairsTable::Find(const std::string& class_id) const {
  for (size_t i = 0; i < classes_.size(); ++i) {
    if (classes_[i].class_id == class_id) return static_cast<int>(i);
  }
  return -1;
}

size_t PairsTable::DistinctImageCount() const {
  std::unordered_set<std::string> paths;
  for (const ClassPairs& c : classes_) {
    paths.insert(c.samples.begin(), c.samples.end());
    for (const Neighbor& n : c.neighbors) paths.insert(n.image_path);
  }
  return paths.size();
}

std::vector<TestClass> ReadTestPairs(const std::string& path) {
  std::ifstream in = OpenForRead(path, "test pairs file", "test100_pairs.jsonl");
  std::vector<TestClass> out;
  internal::ForEachJsonLine(in, path, [&](const JsonLine& line) {
    TestClass c{line.String("class_id"), line.String("class_name"), line.StringList("context_samples"),
                line.StringList("test_samples")};
    if (c.context_samples.empty()) line.Fail("context_samples", "empty; need at least one image");
    out.push_back(std::move(c));
  });
  if (out.empty() || out.size() % 2 != 0) {
    throw DataError(path + ": " + std::to_string(out.size()) +
                    " classes; expected a positive even number (classes 2k and 2k+1 form a 2-way pair)");
  }
  return out;
}

void WriteTestPairs(const std::vector<TestClass>& classes, const std::string& path) {
  std::ofstream out = OpenForWrite(path);
  for (const TestClass& c : classes) {
    nlohmann::json obj = {{"class_id", c.class_id},
                          {"class_name", c.class_name},
                          {"context_samples", c.context_samples},
                          {"test_samples", c.test_samples}};
    out << obj.dump() << "\n";
  }
  CheckWritten(out, path);
}

}  // namespace lcl::sampler
