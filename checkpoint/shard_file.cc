// Shard files: safetensors writer with streaming XXH3 and fsync, mmap reader with header validation.
#include "checkpoint/shard_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "checkpoint/checksum.h"
#include "checkpoint/snapshot.h"
#include "cluster/errors.h"

namespace lcl::checkpoint {
namespace {

const std::pair<torch::ScalarType, const char*> kDtypes[] = {
    {torch::kFloat, "F32"}, {torch::kDouble, "F64"}, {torch::kBFloat16, "BF16"}, {torch::kHalf, "F16"},
    {torch::kInt, "I32"},   {torch::kLong, "I64"},   {torch::kByte, "U8"},       {torch::kBool, "BOOL"}};

std::string Errno(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

// Writes all of `size` bytes, hashing them; throws on a short write (disk full, I/O error).
void WriteAll(int fd, const void* data, size_t size, Xxh3* hash, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  hash->Update(p, size);
  while (size > 0) {
    ssize_t n = ::write(fd, p, std::min<size_t>(size, size_t{1} << 30));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw CheckpointError(Errno("cannot write", path));
    p += n;
    size -= static_cast<size_t>(n);
  }
}

}  // namespace

std::string DtypeName(torch::ScalarType t) {
  for (const auto& [dt, name] : kDtypes) {
    if (dt == t) return name;
  }
  throw CheckpointError(std::string("a checkpoint cannot hold dtype ") + c10::toString(t));
}

torch::ScalarType DtypeFromName(const std::string& name, const std::string& where) {
  for (const auto& [dt, n] : kDtypes) {
    if (name == n) return dt;
  }
  throw CheckpointError(where + ": unsupported dtype '" + name + "'");
}

FileEntry WriteShardFile(const std::string& path, const TensorList& tensors, Snapshot* bytes) {
  nlohmann::json header = nlohmann::json::object();
  header["__metadata__"] = {{"format", "lcl-checkpoint-shard"}};
  std::vector<torch::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (header.contains(name)) throw CheckpointError("tensor '" + name + "' appears twice in " + path);
    torch::Tensor c = t.cpu().contiguous();
    const uint64_t nbytes = c.numel() * c.element_size();
    header[name] = {{"dtype", DtypeName(c.scalar_type())}, {"shape", c.sizes().vec()},
                    {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    data.push_back(c);
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // 8-byte aligned data section, as safetensors pads
  const uint64_t hlen = text.size();

  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw CheckpointError(Errno("cannot create", path));
  Xxh3 hash;
  try {
    uint8_t len_le[8];
    for (int i = 0; i < 8; ++i) len_le[i] = static_cast<uint8_t>(hlen >> (8 * i));
    WriteAll(fd, len_le, 8, &hash, path);
    WriteAll(fd, text.data(), text.size(), &hash, path);
    for (size_t i = 0; i < data.size(); ++i) {
      if (bytes) {
        bytes->Read(i, [&](const void* p, size_t n) { WriteAll(fd, p, n, &hash, path); });
      } else {
        WriteAll(fd, data[i].data_ptr(), data[i].numel() * data[i].element_size(), &hash, path);
      }
    }
    // The data must be on disk before rank 0 may commit the manifest that points at it.
    if (::fsync(fd) != 0) throw CheckpointError(Errno("cannot fsync", path));
  } catch (...) {
    ::close(fd);
    throw;
  }
  if (::close(fd) != 0) throw CheckpointError(Errno("cannot close", path));
  FileEntry e;
  e.set_name(std::filesystem::path(path).filename().string());
  e.set_size(8 + hlen + offset);
  e.set_xxh3(hash.Digest());
  return e;
}

ShardFile::ShardFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw CheckpointError(Errno("cannot open shard", path) + "; the checkpoint is incomplete");
  struct stat st {};
  ::fstat(fd, &st);
  size_ = static_cast<size_t>(st.st_size);
  if (size_ < 8) {
    ::close(fd);
    fd_ = -1;
    throw CheckpointError("shard " + path + " is truncated: " + std::to_string(size_) + " bytes");
  }
  map_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  fd_ = fd;
  // A constructor that throws runs no destructor: give the mapping and the descriptor back before rethrowing.
  try {
    if (map_ == MAP_FAILED) {
      map_ = nullptr;
      throw CheckpointError(Errno("cannot mmap shard", path));
    }
    const uint8_t* bytes = static_cast<const uint8_t*>(map_);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; ++i) hlen |= static_cast<uint64_t>(bytes[i]) << (8 * i);
    if (hlen > size_ - 8) {
      throw CheckpointError("shard " + path + " is truncated or corrupt: header of " + std::to_string(hlen) +
                            " bytes in a " + std::to_string(size_) + "-byte file");
    }
    nlohmann::json header;
    try {
      header = nlohmann::json::parse(bytes + 8, bytes + 8 + hlen);
    } catch (const std::exception& e) {
      throw CheckpointError("shard " + path + " has a corrupt header: " + e.what());
    }
    data_ = bytes + 8 + hlen;
    data_start_ = 8 + hlen;
    const uint64_t data_size = size_ - 8 - hlen;
    for (auto it = header.begin(); it != header.end(); ++it) {
      if (it.key() == "__metadata__") continue;
      const std::string where = "shard " + path + ", tensor '" + it.key() + "'";
      try {
        Entry e;
        e.dtype = DtypeFromName(it->at("dtype").get<std::string>(), where);
        e.shape = it->at("shape").get<std::vector<int64_t>>();
        auto off = it->at("data_offsets").get<std::vector<uint64_t>>();
        if (off.size() != 2 || off[0] > off[1]) throw CheckpointError(where + ": bad data_offsets");
        e.begin = off[0];
        e.end = off[1];
        int64_t numel = 1;
        for (int64_t d : e.shape) numel *= d;
        if (e.end - e.begin != static_cast<uint64_t>(numel) * c10::elementSize(e.dtype)) {
          throw CheckpointError(where + ": byte range does not match its shape and dtype");
        }
        if (e.end > data_size) {
          throw CheckpointError(where + ": data ends at byte " + std::to_string(e.end) + " but the file holds " +
                                std::to_string(data_size) + " data bytes (truncated)");
        }
        entries_[it.key()] = e;
      } catch (const nlohmann::json::exception& ex) {
        throw CheckpointError(where + ": malformed header entry: " + ex.what());
      }
    }
  } catch (...) {
    if (map_ != nullptr && map_ != MAP_FAILED) ::munmap(map_, size_);
    map_ = nullptr;
    ::close(fd_);
    fd_ = -1;
    throw;
  }
}

ShardFile::~ShardFile() {
  if (map_) ::munmap(map_, size_);
  if (fd_ >= 0) ::close(fd_);
}

void ShardFile::ReadBytes(const std::string& name, uint64_t offset, uint64_t nbytes, void* dst) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) throw CheckpointError("shard " + path_ + " has no tensor '" + name + "'");
  if (offset + nbytes > it->second.end - it->second.begin) {
    throw CheckpointError("shard " + path_ + ": read past the end of tensor '" + name + "'");
  }
  char* out = static_cast<char*>(dst);
  uint64_t pos = data_start_ + it->second.begin + offset;
  while (nbytes > 0) {
    ssize_t n = ::pread(fd_, out, std::min<uint64_t>(nbytes, uint64_t{1} << 30), static_cast<off_t>(pos));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw CheckpointError(Errno("cannot read", path_));
    out += n;
    pos += static_cast<uint64_t>(n);
    nbytes -= static_cast<uint64_t>(n);
  }
}

torch::Tensor ShardFile::View(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) throw CheckpointError("shard " + path_ + " has no tensor '" + name + "'");
  const Entry& e = it->second;
  return torch::from_blob(const_cast<uint8_t*>(data_ + e.begin), e.shape,
                          torch::TensorOptions().dtype(e.dtype));
}

}  // namespace lcl::checkpoint
