// The safetensors codec: dtype mapping, header encoding and the streaming writer, header parsing and validation,
// the mmap'ed reader, and HF checkpoint directories (model.safetensors or an index + shards).
#include "checkpoint/safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "cluster/errors.h"

namespace lcl::checkpoint {
namespace {

using nlohmann::json;
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // the format's own limit
constexpr char kMetadataKey[] = "__metadata__";

// Bytes per element of every dtype the format defines; an absent name is not a safetensors dtype.
int64_t DtypeBytes(const std::string& dtype) {
  static const std::map<std::string, int64_t> kBytes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"I16", 2}, {"U16", 2}, {"F16", 2},
      {"BF16", 2}, {"I32", 4}, {"U32", 4}, {"F32", 4},     {"F64", 8},     {"I64", 8}, {"U64", 8}};
  auto it = kBytes.find(dtype);
  return it == kBytes.end() ? -1 : it->second;
}

// The dtypes torch holds and this project reads and writes.
constexpr std::pair<torch::ScalarType, const char*> kTorchDtypes[] = {
    {torch::kFloat32, "F32"}, {torch::kFloat64, "F64"}, {torch::kFloat16, "F16"}, {torch::kBFloat16, "BF16"},
    {torch::kInt64, "I64"},   {torch::kInt32, "I32"},   {torch::kInt16, "I16"},   {torch::kInt8, "I8"},
    {torch::kUInt8, "U8"},    {torch::kBool, "BOOL"}};
constexpr char kTorchDtypeList[] = "F32, F64, F16, BF16, I64, I32, I16, I8, U8 or BOOL";

const char* FindDtypeName(torch::ScalarType type) {
  for (const auto& [t, name] : kTorchDtypes) {
    if (t == type) return name;
  }
  return nullptr;
}

uint64_t ByteSize(const torch::Tensor& t) { return static_cast<uint64_t>(t.numel()) * t.element_size(); }

// The 8-byte length and the padded JSON header for `tensors` laid out back to back; `data_bytes` gets the total.
std::string EncodeHeader(const std::string& where, const NamedTensors& tensors,
                         const std::map<std::string, std::string>& metadata, uint64_t* data_bytes) {
  json header = json::object();
  if (!metadata.empty()) header[kMetadataKey] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (header.contains(name)) {
      throw CheckpointError(where + ": tensor '" + name + "' given twice; names must be unique");
    }
    if (name == kMetadataKey) throw CheckpointError(where + ": '" + name + "' is reserved for metadata, not a tensor");
    const char* dtype = FindDtypeName(t.scalar_type());
    if (dtype == nullptr) {
      throw CheckpointError(where + ": tensor '" + name + "' has dtype " + c10::toString(t.scalar_type()) +
                            ", which safetensors files here cannot hold; convert it to " + kTorchDtypeList);
    }
    const uint64_t bytes = ByteSize(t);
    header[name] = {{"dtype", dtype}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the data section 8-byte aligned
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(static_cast<uint64_t>(text.size()) >> (8 * i));
  *data_bytes = offset;
  return out + text;
}

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
  const int64_t element_bytes = DtypeBytes(info.dtype);
  if (element_bytes < 0) throw bad("unknown dtype '" + info.dtype + "'");
  if (!e["shape"].is_array()) throw bad("shape is not an array");
  uint64_t expected = static_cast<uint64_t>(element_bytes);
  for (const auto& d : e["shape"]) {
    if (!d.is_number_integer() || d.get<int64_t>() < 0) throw bad("shape " + e["shape"].dump() + " is invalid");
    info.shape.push_back(d.get<int64_t>());
    if (__builtin_mul_overflow(expected, static_cast<uint64_t>(info.shape.back()), &expected)) {
      throw bad("shape " + e["shape"].dump() + " is too large");
    }
  }
  const json& off = e["data_offsets"];
  if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
    throw bad("data_offsets " + off.dump() + " must be two non-negative integers");
  }
  info.begin = off[0].get<uint64_t>();
  info.end = off[1].get<uint64_t>();
  if (info.begin > info.end) throw bad("data_offsets " + off.dump() + " are reversed");
  if (info.end - info.begin != expected) {
    throw bad("shape " + ShapeString(info.shape) + " of " + info.dtype + " needs " + std::to_string(expected) +
              " bytes but data_offsets " + off.dump() + " span " + std::to_string(info.end - info.begin));
  }
  if (info.end > data_size) {
    throw CheckpointError(path + ": tensor '" + name + "' ends at data byte " + std::to_string(info.end) +
                          " but the file holds only " + std::to_string(data_size) +
                          " data bytes: the file is truncated; copy or write it again");
  }
  return info;
}

// Byte ranges must not overlap: the format forbids aliasing, and a reader that trusted them would hand out
// tensors sharing memory.
void CheckNoOverlap(const std::string& path, const std::map<std::string, SafetensorInfo>& infos) {
  std::vector<std::pair<uint64_t, std::string>> starts;
  for (const auto& [name, info] : infos) {
    if (info.end > info.begin) starts.emplace_back(info.begin, name);
  }
  std::sort(starts.begin(), starts.end());
  for (size_t i = 1; i < starts.size(); ++i) {
    const SafetensorInfo& prev = infos.at(starts[i - 1].second);
    if (starts[i].first < prev.end) {
      throw CheckpointError(path + ": tensors '" + starts[i - 1].second + "' (bytes [" + std::to_string(prev.begin) +
                            ", " + std::to_string(prev.end) + ")) and '" + starts[i].second + "' (from byte " +
                            std::to_string(starts[i].first) + ") overlap in the data section; the header is corrupt");
    }
  }
}

}  // namespace

std::string ShapeString(c10::IntArrayRef shape) { return "[" + c10::Join(", ", shape) + "]"; }

std::string DtypeName(torch::ScalarType type) {
  if (const char* name = FindDtypeName(type)) return name;
  throw CheckpointError(std::string("safetensors files here cannot hold dtype ") + c10::toString(type) +
                        "; convert the tensor to " + kTorchDtypeList);
}

torch::ScalarType DtypeFromName(const std::string& name, const std::string& where) {
  for (const auto& [type, n] : kTorchDtypes) {
    if (name == n) return type;
  }
  throw CheckpointError(where + " has dtype " + name + ", which is not supported here; expected " + kTorchDtypeList +
                        " (convert the file)");
}

uint64_t EncodeSafetensors(const std::string& where, const NamedTensors& tensors,
                           const std::map<std::string, std::string>& metadata, const ByteSink& sink,
                           const TensorBytes& tensor_bytes) {
  uint64_t data_bytes = 0;
  const std::string header = EncodeHeader(where, tensors, metadata, &data_bytes);
  sink(header.data(), header.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const uint64_t expected = ByteSize(tensors[i].second);
    if (tensor_bytes) {
      // The header promised `expected` bytes: a source that hands over another count would corrupt the file.
      uint64_t given = 0;
      tensor_bytes(i, [&](const void* data, size_t size) {
        given += size;
        sink(data, size);
      });
      if (given != expected) {
        throw CheckpointError(where + ": tensor '" + tensors[i].first + "' got " + std::to_string(given) +
                              " bytes from its source, its header entry says " + std::to_string(expected));
      }
    } else if (expected > 0) {
      const torch::Tensor t = tensors[i].second.detach().cpu().contiguous();
      sink(t.data_ptr(), expected);
    }
  }
  return header.size() + data_bytes;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : file_(path) {
  const uint64_t size = file_.size();
  if (size < 8) {
    throw CheckpointError(path + " is truncated: " + std::to_string(size) +
                          " bytes, too short for a safetensors file (an 8-byte header length comes first); "
                          "copy or write it again");
  }
  const uint8_t* bytes = file_.data();
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) header_len |= static_cast<uint64_t>(bytes[i]) << (8 * i);  // little endian
  if (header_len > kMaxHeaderBytes || header_len > size - 8) {
    throw CheckpointError(path + ": header length " + std::to_string(header_len) + " exceeds the file size " +
                          std::to_string(size) + " (or the 100 MB limit): truncated or not safetensors");
  }
  data_start_ = 8 + header_len;
  const uint64_t data_size = size - data_start_;
  const json header = json::parse(bytes + 8, bytes + data_start_, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    throw CheckpointError(path + ": corrupt header: not a JSON object; the file is damaged or not safetensors");
  }
  for (const auto& [name, entry] : header.items()) {
    if (name == kMetadataKey) {
      if (!entry.is_object()) throw CheckpointError(path + ": corrupt header: __metadata__ is not a JSON object");
      for (const auto& [k, v] : entry.items()) metadata_[k] = v.is_string() ? v.get<std::string>() : v.dump();
      continue;
    }
    infos_[name] = ParseEntry(path, name, entry, data_size);
  }
  CheckNoOverlap(path, infos_);
}

std::vector<std::string> SafetensorsFile::Names() const {
  std::vector<std::string> names;
  for (const auto& kv : infos_) names.push_back(kv.first);
  return names;
}

const SafetensorInfo& SafetensorsFile::Info(const std::string& name) const {
  auto it = infos_.find(name);
  if (it == infos_.end()) throw CheckpointError(path() + " has no tensor '" + name + "'");
  return it->second;
}

torch::Tensor SafetensorsFile::View(const std::string& name) const {
  const SafetensorInfo& info = Info(name);
  const torch::ScalarType type = DtypeFromName(info.dtype, path() + ": tensor '" + name + "'");
  return torch::from_blob(const_cast<uint8_t*>(file_.data() + data_start_ + info.begin), info.shape,
                          torch::TensorOptions().dtype(type));
}

torch::Tensor SafetensorsFile::Read(const std::string& name) const { return View(name).clone(); }

torch::Tensor SafetensorsFile::ReadSlice(const std::string& name, int64_t dim, int64_t start, int64_t length) const {
  torch::Tensor view = View(name);
  if (dim < 0 || dim >= view.dim() || start < 0 || length < 0 || start + length > view.size(dim)) {
    throw CheckpointError(path() + ": cannot read [" + std::to_string(start) + ", " + std::to_string(start + length) +
                          ") along dim " + std::to_string(dim) + " of tensor '" + name + "' with shape " +
                          ShapeString(Info(name).shape));
  }
  return view.narrow(dim, start, length).clone(at::MemoryFormat::Contiguous);
}

void SafetensorsFile::ReadBytes(const std::string& name, uint64_t offset, uint64_t nbytes, void* dst) const {
  const SafetensorInfo& info = Info(name);
  if (offset > info.end - info.begin || nbytes > info.end - info.begin - offset) {
    throw CheckpointError(path() + ": cannot read bytes [" + std::to_string(offset) + ", " +
                          std::to_string(offset + nbytes) + ") of tensor '" + name + "', which holds " +
                          std::to_string(info.end - info.begin));
  }
  file_.ReadAt(data_start_ + info.begin + offset, nbytes, dst);
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
    for (const auto& [name, file] : weight_map.items()) {
      if (!file.is_string()) {
        throw CheckpointError(index.string() + ": weight_map maps tensor '" + name + "' to " + file.dump() +
                              ", not a file name");
      }
      unique.insert(file.get<std::string>());
    }
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
  if (it == owner_.end()) throw CheckpointError(origin_ + " has no tensor '" + name + "'");
  return *it->second;
}

std::vector<std::string> SafetensorsCheckpoint::Names() const {
  std::vector<std::string> names;
  for (const auto& kv : owner_) names.push_back(kv.first);
  return names;
}

void WriteSafetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  const std::string tmp = path + ".tmp";
  std::error_code ec;
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw CheckpointError("cannot create '" + tmp + "': " + std::strerror(errno));
    try {
      EncodeSafetensors(path, tensors, metadata, [&](const void* data, size_t size) {
        out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
        if (!out) throw CheckpointError("failed writing '" + tmp + "' (disk full or not writable?)");
      });
      out.close();
      if (!out) throw CheckpointError("failed writing '" + tmp + "' (disk full or not writable?)");
    } catch (...) {
      out.close();
      std::filesystem::remove(tmp, ec);  // no half-written file left behind
      throw;
    }
  }
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

}  // namespace lcl::checkpoint
