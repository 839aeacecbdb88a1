// The one safetensors codec (https://github.com/huggingface/safetensors), used by model import/export and by
// checkpoint shards: the dtype mapping, the header writer (EncodeSafetensors streams a whole file into a sink, so
// the shard writer can hash and fsync what it writes), and an mmap'ed reader that validates the header (length,
// JSON, dtypes, shapes against byte ranges, bounds, overlaps) and reads whole tensors, one slice along a dim (a TP
// rank touches only its rows) or raw byte ranges. SafetensorsCheckpoint opens a directory holding either
// model.safetensors or model.safetensors.index.json + shards. Every failure is a lcl::CheckpointError naming the
// file, the tensor, expected vs found.
//
//   SafetensorsCheckpoint ckpt = SafetensorsCheckpoint::Open(dir);
//   torch::Tensor rows = ckpt.File(name).ReadSlice(name, /*dim=*/0, r * n, n);
//   WriteSafetensors(dir + "/model.safetensors", {{"w", w}});
#pragma once

#include <torch/types.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "checkpoint/mapped_file.h"

namespace lcl::checkpoint {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// "[2, 3]" ("[]" for a scalar): how every error in the project prints a shape.
std::string ShapeString(c10::IntArrayRef shape);

// The format's name of a torch dtype ("F32", "BF16", ...), for the dtypes this project reads and writes: F32, F64,
// F16, BF16, I64, I32, I16, I8, U8, BOOL. Others are a CheckpointError.
std::string DtypeName(torch::ScalarType type);
// The inverse; a name the format defines but torch cannot hold here (U16, F8_E4M3, ...) or an unknown one is a
// CheckpointError starting with `where`.
torch::ScalarType DtypeFromName(const std::string& name, const std::string& where);

// Receives a file's bytes in order.
using ByteSink = std::function<void(const void* data, size_t size)>;
// Hands all of tensor i's bytes to the sink (e.g. from a Snapshot instead of the tensor itself).
using TensorBytes = std::function<void(size_t i, const ByteSink& sink)>;

// Streams one safetensors file into `sink`: the 8-byte little-endian header length, the JSON header (padded with
// spaces so the data section starts 8-byte aligned), then each tensor's bytes, back to back in the given order.
// Without `tensor_bytes` the tensors' own bytes are written (any device or layout); with it, `tensors` give only
// names, dtypes and shapes. A repeated name or a dtype the format cannot hold is a CheckpointError naming `where`
// before any byte reaches the sink. Returns the number of bytes written.
uint64_t EncodeSafetensors(const std::string& where, const NamedTensors& tensors,
                           const std::map<std::string, std::string>& metadata, const ByteSink& sink,
                           const TensorBytes& tensor_bytes = nullptr);

struct SafetensorInfo {
  std::string dtype;           // "F32", "BF16", ... as in the header
  std::vector<int64_t> shape;  // [] for a scalar
  uint64_t begin = 0;          // byte offsets into the data section
  uint64_t end = 0;
};

class SafetensorsFile {
 public:
  // mmaps and validates `path`; throws CheckpointError on a truncated file or a bad header.
  explicit SafetensorsFile(const std::string& path);

  const std::string& path() const { return file_.path(); }
  std::vector<std::string> Names() const;
  bool Has(const std::string& name) const { return infos_.count(name) != 0; }
  const SafetensorInfo& Info(const std::string& name) const;  // throws CheckpointError if absent
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // Zero-copy view of the mapped bytes in the stored dtype, valid while this object lives; a dtype torch cannot
  // hold here (see DtypeFromName) is a CheckpointError.
  torch::Tensor View(const std::string& name) const;
  // A copy in the stored dtype.
  torch::Tensor Read(const std::string& name) const;
  // Elements [start, start + length) along `dim`, copied; with dim 0 only those bytes are touched.
  torch::Tensor ReadSlice(const std::string& name, int64_t dim, int64_t start, int64_t length) const;
  // Copies `nbytes` starting `offset` bytes into tensor `name` straight into `dst` with pread(2).
  void ReadBytes(const std::string& name, uint64_t offset, uint64_t nbytes, void* dst) const;

 private:
  MappedFile file_;
  uint64_t data_start_ = 0;  // file offset of the data section
  std::map<std::string, SafetensorInfo> infos_;
  std::map<std::string, std::string> metadata_;
};

// A checkpoint directory (or a single .safetensors file): which file holds which tensor.
class SafetensorsCheckpoint {
 public:
  static SafetensorsCheckpoint Open(const std::string& dir_or_file);
  bool Has(const std::string& name) const { return owner_.count(name) != 0; }
  const SafetensorsFile& File(const std::string& name) const;  // throws CheckpointError if absent
  std::vector<std::string> Names() const;
  const std::string& origin() const { return origin_; }

 private:
  std::string origin_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, SafetensorsFile*> owner_;
};

// Writes one file (via `path`.tmp + rename). Names must be unique; dtypes as DtypeName.
void WriteSafetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});
// model.safetensors when the total fits in `max_shard_bytes`, else model-0000i-of-0000N.safetensors plus
// model.safetensors.index.json (HF layout). Returns the files written (relative names).
std::vector<std::string> WriteSafetensorsCheckpoint(const std::string& dir, const NamedTensors& tensors,
                                                    int64_t max_shard_bytes);

}  // namespace lcl::checkpoint
