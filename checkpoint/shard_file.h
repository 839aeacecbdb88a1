// One rank's shard file of a checkpoint, in the safetensors layout (8-byte little-endian header length, JSON
// header with dtype/shape/data_offsets per tensor, raw little-endian data): writer that checksums while it
// writes and fsyncs, and an mmap reader that validates the header against the file.
//
//   FileEntry e = WriteShardFile(dir + "/shard-r00000.safetensors", {{"w", w}});   // e.size, e.xxh3
//   ShardFile f(dir + "/shard-r00000.safetensors");  torch::Tensor w = f.View("w").clone();
#pragma once

#include <torch/types.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "checkpoint/manifest.pb.h"

namespace lcl::checkpoint {

using TensorList = std::vector<std::pair<std::string, torch::Tensor>>;

// "F32", "BF16", ... for a torch dtype; throws CheckpointError for dtypes a checkpoint cannot hold.
std::string DtypeName(torch::ScalarType t);
torch::ScalarType DtypeFromName(const std::string& name, const std::string& where);

class Snapshot;

// Writes `tensors` (CPU) to `path`, fsyncs it, and returns its size and XXH3-64 (name = basename of path).
// With `bytes`, the tensors give only names, dtypes and shapes; tensor i's data comes from bytes->Read(i).
FileEntry WriteShardFile(const std::string& path, const TensorList& tensors, Snapshot* bytes = nullptr);

class ShardFile {
 public:
  struct Entry {
    torch::ScalarType dtype;
    std::vector<int64_t> shape;
    uint64_t begin = 0, end = 0;  // byte range in the data section
  };
  // mmaps and validates; a truncated file or a bad header is a CheckpointError naming the file.
  explicit ShardFile(const std::string& path);
  ~ShardFile();
  ShardFile(const ShardFile&) = delete;
  ShardFile& operator=(const ShardFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, Entry>& entries() const { return entries_; }
  // Zero-copy view of the mapped bytes (valid while this object lives); throws if `name` is absent.
  torch::Tensor View(const std::string& name) const;
  // Copies `nbytes` starting `offset` bytes into tensor `name` straight into `dst` with pread(2): no page
  // faults on the mapping, which matters on machines where faults are slow.
  void ReadBytes(const std::string& name, uint64_t offset, uint64_t nbytes, void* dst) const;

 private:
  std::string path_;
  int fd_ = -1;
  void* map_ = nullptr;
  size_t size_ = 0;
  uint64_t data_start_ = 0;  // file offset of the data section
  const uint8_t* data_ = nullptr;
  std::map<std::string, Entry> entries_;
};

}  // namespace lcl::checkpoint
