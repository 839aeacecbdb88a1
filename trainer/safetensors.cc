// Safetensors reader (mmap, validated header) and writer.
#include "trainer/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "cluster/errors.h"

namespace lcl::trainer {
namespace {

using nlohmann::json;
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // the format's own limit

// Bytes per element of every dtype the format defines; an absent name is not a safetensors dtype.
int64_t DtypeBytes(const std::string& dtype) {
  static const std::map<std::string, int64_t> kBytes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"I16", 2}, {"U16", 2}, {"F16", 2},
      {"BF16", 2}, {"I32", 4}, {"U32", 4}, {"F32", 4},     {"F64", 8},     {"I64", 8}, {"U64", 8}};
  auto it = kBytes.find(dtype);
  return it == kBytes.end() ? -1 : it->second;
}

// Dtypes this project reads and writes.
const std::map<std::string, torch::ScalarType>& TorchDtypes() {
  static const std::map<std::string, torch::ScalarType> kTypes = {
      {"F32", torch::kFloat32}, {"F16", torch::kFloat16}, {"BF16", torch::kBFloat16}, {"I64", torch::kInt64}};
  return kTypes;
}

std::string DtypeName(torch::ScalarType t) {
  for (const auto& [name, type] : TorchDtypes()) {
    if (type == t) return name;
  }
  throw CheckpointError(std::string("cannot write dtype ") + c10::toString(t) +
                        " to safetensors; convert to float32, float16, bfloat16 or int64");
}

std::string ShapeString(const std::vector<int64_t>& shape) { return "[" + c10::Join(", ", shape) + "]"; }

SafetensorInfo ParseEntry(const std::string& path, const std::string& name, const json& e, uint64_t data_size) {
  auto bad = [&](const std::string& why) {
    return CheckpointError(path + ": bad safetensors header entry for tensor '" + name + "': " + why +
                           "; the file is corrupt or was not written as safetensors");
  };
  if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") || !e.contains("data_offsets")) {
    throw bad("expected {dtype, shape, data_offsets}, found " + e.dump());
  }
  SafetensorInfo info;
  if (!e["dtype"].is_string()) throw bad("dtype is not a string");
  info.dtype = e["dtype"].get<std::string>();
  if (DtypeBytes(info.dtype) < 0) throw bad("unknown dtype '" + info.dtype + "'");
  if (!e["shape"].is_array()) throw bad("shape is not an array");
  int64_t numel = 1;
  for (const auto& d : e["shape"]) {
    if (!d.is_number_integer() || d.get<int64_t>() < 0) throw bad("shape " + e["shape"].dump() + " is invalid");
    info.shape.push_back(d.get<int64_t>());
    numel *= info.shape.back();
  }
  const json& off = e["data_offsets"];
  if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
    throw bad("data_offsets " + off.dump() + " must be two non-negative integers");
  }
  info.begin = off[0].get<uint64_t>();
  info.end = off[1].get<uint64_t>();
  if (info.begin > info.end) throw bad("data_offsets " + off.dump() + " are reversed");
  const uint64_t expected = static_cast<uint64_t>(numel * DtypeBytes(info.dtype));
  if (info.end - info.begin != expected) {
    throw bad("shape " + ShapeString(info.shape) + " of " + info.dtype + " needs " + std::to_string(expected) +
              " bytes but data_offsets " + off.dump() + " span " + std::to_string(info.end - info.begin));
  }
  if (info.end > data_size) {
    throw CheckpointError(path + ": tensor '" + name + "' ends at data byte " + std::to_string(info.end) +
                          " but the file holds only " + std::to_string(data_size) +
                          " data bytes: the file is truncated; copy or download it again");
  }
  return info;
}

}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw CheckpointError("cannot open '" + path + "': " + std::strerror(errno));
  struct stat st {};
  ::fstat(fd, &st);
  map_size_ = static_cast<size_t>(st.st_size);
  if (map_size_ < 8) {
    ::close(fd);
    throw CheckpointError(path + ": " + std::to_string(map_size_) +
                          " bytes is too short for a safetensors file (8-byte header length first); it is "
                          "truncated or not safetensors");
  }
  map_ = ::mmap(nullptr, map_size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);  // the mapping keeps the file alive
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    throw CheckpointError("cannot mmap '" + path + "': " + std::strerror(errno));
  }
  const auto* bytes = static_cast<const uint8_t*>(map_);
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes, 8);  // little endian, as the format and x86/ARM hosts are
  if (header_len > kMaxHeaderBytes || header_len > map_size_ - 8) {
    const std::string found = std::to_string(header_len);
    ::munmap(map_, map_size_);
    map_ = nullptr;
    throw CheckpointError(path + ": header length " + found + " exceeds the file size " +
                          std::to_string(st.st_size) + " (or the 100 MB limit): truncated or not safetensors");
  }
  data_ = bytes + 8 + header_len;
  data_size_ = map_size_ - 8 - header_len;
  try {
    ParseHeader(std::string(reinterpret_cast<const char*>(bytes + 8), header_len));
  } catch (...) {
    ::munmap(map_, map_size_);
    map_ = nullptr;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
  map_ = nullptr;
}

void SafetensorsFile::ParseHeader(const std::string& header) {
  json j = json::parse(header, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    throw CheckpointError(path_ +
                          ": the safetensors header is not a JSON object; the file is corrupt or not "
                          "safetensors");
  }
  for (const auto& [name, entry] : j.items()) {
    if (name == "__metadata__") {
      for (const auto& [k, v] : entry.items()) metadata_[k] = v.is_string() ? v.get<std::string>() : v.dump();
      continue;
    }
    infos_[name] = ParseEntry(path_, name, entry, data_size_);
  }
  // Byte ranges must not overlap (the format forbids aliasing).
  std::vector<std::pair<uint64_t, std::string>> starts;
  for (const auto& [name, info] : infos_) {
    if (info.end > info.begin) starts.emplace_back(info.begin, name);
  }
  std::sort(starts.begin(), starts.end());
  for (size_t i = 1; i < starts.size(); ++i) {
    const auto& prev = infos_[starts[i - 1].second];
    if (starts[i].first < prev.end) {
      throw CheckpointError(path_ + ": tensors '" + starts[i - 1].second + "' and '" + starts[i].second +
                            "' overlap in the data section; the header is corrupt");
    }
  }
}

std::vector<std::string> SafetensorsFile::Names() const {
  std::vector<std::string> names;
  for (const auto& kv : infos_) names.push_back(kv.first);
  return names;
}

const SafetensorInfo& SafetensorsFile::Info(const std::string& name) const {
  auto it = infos_.find(name);
  if (it == infos_.end()) throw CheckpointError(path_ + ": no tensor named '" + name + "'");
  return it->second;
}

torch::Tensor SafetensorsFile::View(const std::string& name) const {
  const SafetensorInfo& info = Info(name);
  auto type = TorchDtypes().find(info.dtype);
  if (type == TorchDtypes().end()) {
    throw CheckpointError(path_ + ": tensor '" + name + "' has dtype " + info.dtype +
                          ", which is not supported; expected F32, F16 or BF16 (convert the checkpoint)");
  }
  return torch::from_blob(const_cast<uint8_t*>(data_ + info.begin), info.shape,
                          torch::TensorOptions().dtype(type->second));
}

torch::Tensor SafetensorsFile::Read(const std::string& name) const { return View(name).clone(); }

torch::Tensor SafetensorsFile::ReadSlice(const std::string& name, int64_t dim, int64_t start,
                                         int64_t length) const {
  torch::Tensor view = View(name);
  if (dim < 0 || dim >= view.dim() || start < 0 || length < 0 || start + length > view.size(dim)) {
    throw CheckpointError(path_ + ": cannot read [" + std::to_string(start) + ", " +
                          std::to_string(start + length) + ") along dim " + std::to_string(dim) + " of tensor '" +
                          name + "' with shape " + ShapeString(Info(name).shape));
  }
  return view.narrow(dim, start, length).clone(at::MemoryFormat::Contiguous);
}

SafetensorsCheckpoint SafetensorsCheckpoint::Open(const std::string& dir_or_file) {
  namespace fs = std::filesystem;
  SafetensorsCheckpoint ckpt;
  ckpt.origin_ = dir_or_file;
  std::vector<std::string> files;
  const fs::path index = fs::path(dir_or_file) / "model.safetensors.index.json";
  json weight_map;
  if (fs::is_regular_file(dir_or_file)) {
    files.push_back(dir_or_file);
  } else if (fs::is_regular_file(index)) {
    std::ifstream in(index);
    json j = json::parse(in, nullptr, false);
    if (j.is_discarded() || !j.contains("weight_map") || !j["weight_map"].is_object()) {
      throw CheckpointError(index.string() + ": not a valid index (expected a JSON object with \"weight_map\")");
    }
    weight_map = j["weight_map"];
    std::set<std::string> unique;
    for (const auto& [name, file] : weight_map.items()) unique.insert(file.get<std::string>());
    for (const auto& f : unique) files.push_back((fs::path(dir_or_file) / f).string());
    ckpt.origin_ = index.string();
  } else if (fs::is_regular_file(fs::path(dir_or_file) / "model.safetensors")) {
    files.push_back((fs::path(dir_or_file) / "model.safetensors").string());
  } else {
    throw CheckpointError("no model.safetensors or model.safetensors.index.json in '" + dir_or_file +
                          "'; point to a Hugging Face checkpoint directory");
  }
  for (const auto& f : files) {
    ckpt.files_.push_back(std::make_shared<SafetensorsFile>(f));
    for (const auto& name : ckpt.files_.back()->Names()) ckpt.owner_[name] = ckpt.files_.back().get();
  }
  for (const auto& [name, file] : weight_map.items()) {
    if (!ckpt.Has(name)) {
      throw CheckpointError(index.string() + ": tensor '" + name + "' is mapped to " + file.get<std::string>() +
                            ", which does not contain it; the shards and the index disagree");
    }
  }
  return ckpt;
}

const SafetensorsFile& SafetensorsCheckpoint::File(const std::string& name) const {
  auto it = owner_.find(name);
  if (it == owner_.end()) throw CheckpointError(origin_ + ": no tensor named '" + name + "'");
  return *it->second;
}

std::vector<std::string> SafetensorsCheckpoint::Names() const {
  std::vector<std::string> names;
  for (const auto& kv : owner_) names.push_back(kv.first);
  return names;
}

void WriteSafetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<torch::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (header.contains(name)) throw CheckpointError(path + ": tensor '" + name + "' given twice");
    torch::Tensor t = tensor.detach().cpu().contiguous();
    const uint64_t bytes = t.numel() * t.element_size();
    header[name] = {{"dtype", DtypeName(t.scalar_type())},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(t);
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the data section 8-byte aligned
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    const uint64_t len = text.size();
    out.write(reinterpret_cast<const char*>(&len), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& t : data) {
      out.write(static_cast<const char*>(t.data_ptr()),
                static_cast<std::streamsize>(t.numel() * t.element_size()));
    }
    if (!out.good()) throw CheckpointError("failed writing '" + tmp + "' (disk full or not writable?)");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw CheckpointError("cannot rename '" + tmp + "' to '" + path + "': " + ec.message());
}

std::vector<std::string> WriteSafetensorsCheckpoint(const std::string& dir, const NamedTensors& tensors,
                                                    int64_t max_shard_bytes) {
  std::vector<NamedTensors> shards(1);
  int64_t shard_bytes = 0, total = 0;
  for (const auto& nt : tensors) {
    const int64_t bytes = nt.second.numel() * nt.second.element_size();
    if (!shards.back().empty() && shard_bytes + bytes > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(nt);
    shard_bytes += bytes;
    total += bytes;
  }
  std::filesystem::create_directories(dir);
  const std::map<std::string, std::string> meta = {{"format", "pt"}};
  if (shards.size() == 1) {
    WriteSafetensors(dir + "/model.safetensors", shards[0], meta);
    return {"model.safetensors"};
  }
  std::vector<std::string> names;
  json weight_map = json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    char name[64];
    std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
    WriteSafetensors(dir + "/" + name, shards[i], meta);
    for (const auto& nt : shards[i]) weight_map[nt.first] = name;
    names.push_back(name);
  }
  std::ofstream(dir + "/model.safetensors.index.json")
      << json{{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}}.dump(2) << "\n";
  return names;
}

}  // namespace lcl::trainer
