// Safetensors files (https://github.com/huggingface/safetensors): an mmap'ed reader that validates the header
// (size, JSON, dtypes, shapes against byte ranges, bounds, overlaps), reads whole tensors or one slice along a dim
// (a TP rank touches only its rows), and a writer. SafetensorsCheckpoint opens a directory holding either
// model.safetensors or model.safetensors.index.json + shards. Every failure is a lcl::CheckpointError naming the
// file, the tensor, expected vs found.
//
//   SafetensorsCheckpoint ckpt = SafetensorsCheckpoint::Open(dir);
//   torch::Tensor rows = ckpt.File("model.embed_tokens.weight").ReadSlice("model.embed_tokens.weight", 0, r * n,
//   n); WriteSafetensors(dir + "/model.safetensors", {{"w", w}});
#pragma once

#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace lcl::trainer {

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
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  std::vector<std::string> Names() const;
  bool Has(const std::string& name) const { return infos_.count(name) != 0; }
  const SafetensorInfo& Info(const std::string& name) const;  // throws CheckpointError if absent
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // A copy in the stored dtype (F32, F16, BF16 or I64; others are a CheckpointError).
  torch::Tensor Read(const std::string& name) const;
  // Elements [start, start + length) along `dim`, copied; with dim 0 only those bytes are touched.
  torch::Tensor ReadSlice(const std::string& name, int64_t dim, int64_t start, int64_t length) const;

 private:
  torch::Tensor View(const std::string& name) const;  // zero-copy view of the mapped bytes
  void ParseHeader(const std::string& header);

  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  const uint8_t* data_ = nullptr;  // start of the data section
  uint64_t data_size_ = 0;
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

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// Writes one file (via `path`.tmp + rename). Tensors must be F32/F16/BF16/I64; names must be unique.
void WriteSafetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});
// model.safetensors when the total fits in `max_shard_bytes`, else model-0000i-of-0000N.safetensors plus
// model.safetensors.index.json (HF layout). Returns the files written (relative names).
std::vector<std::string> WriteSafetensorsCheckpoint(const std::string& dir, const NamedTensors& tensors,
                                                    int64_t max_shard_bytes);

}  // namespace lcl::trainer
