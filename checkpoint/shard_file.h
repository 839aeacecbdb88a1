// One rank's shard file of a checkpoint: a safetensors file (checkpoint/safetensors.h owns the format) that the
// writer checksums (XXH3-64) while it writes and fsyncs before the save may commit, and a reader that holds only
// dtypes torch can load, with pread for byte ranges.
//
//   FileEntry e = WriteShardFile(dir + "/shard-r00000.safetensors", {{"w", w}});   // e.size, e.xxh3
//   ShardFile f(dir + "/shard-r00000.safetensors");  torch::Tensor w = f.View("w").clone();
#pragma once

#include <torch/types.h>

#include <map>
#include <string>
#include <vector>

#include "checkpoint/manifest.pb.h"
#include "checkpoint/safetensors.h"

namespace lcl::checkpoint {

using TensorList = NamedTensors;

class Snapshot;

// Writes `tensors` to `path`, fsyncs it, and returns its size and XXH3-64 (name = basename of path).
// With `bytes`, the tensors give only names, dtypes and shapes; tensor i's data comes from bytes->Read(i).
FileEntry WriteShardFile(const std::string& path, const TensorList& tensors, Snapshot* bytes = nullptr);

class ShardFile {
 public:
  struct Entry {
    torch::ScalarType dtype;
    std::vector<int64_t> shape;
    uint64_t begin = 0, end = 0;  // byte range in the data section
  };
  // mmaps and validates (SafetensorsFile); a truncated file, a bad header or a dtype torch cannot load is a
  // CheckpointError naming the file.
  explicit ShardFile(const std::string& path);

  const std::string& path() const { return file_.path(); }
  const std::map<std::string, Entry>& entries() const { return entries_; }
  // Zero-copy view of the mapped bytes (valid while this object lives); throws if `name` is absent.
  torch::Tensor View(const std::string& name) const { return file_.View(name); }
  // Copies `nbytes` starting `offset` bytes into tensor `name` straight into `dst` with pread(2): no page
  // faults on the mapping, which matters on machines where faults are slow.
  void ReadBytes(const std::string& name, uint64_t offset, uint64_t nbytes, void* dst) const {
    file_.ReadBytes(name, offset, nbytes, dst);
  }

 private:
  SafetensorsFile file_;
  std::map<std::string, Entry> entries_;
};

}  // namespace lcl::checkpoint
