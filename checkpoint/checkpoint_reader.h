// Reading checkpoints: listing a run's steps with their status, choosing the one to resume from, verifying
// sizes and checksums, and reading any box of any tensor from whichever shards hold it, so a run can resume
// with another TP and DP layout than the one that saved.
//
//   std::string dir = ResolveResume(run_dir, "auto");            // "" when there is nothing to resume
//   CheckpointReader ckpt(dir);
//   torch::Tensor rows = ckpt.Read("w", {r * 64, 0}, {64, 512}); // rank r's rows of w, whatever layout saved it
#pragma once

#include <torch/types.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "checkpoint/manifest.pb.h"
#include "checkpoint/shard_file.h"

namespace lcl::cluster {
class ControlPlane;
}

namespace lcl::checkpoint {

struct CheckpointListing {
  std::string name;  // step_00000100
  std::string path;
  int64_t step = -1;
  bool complete = false;
  std::string status;  // "complete", "incomplete (no manifest.pb)", "incomplete (unfinished save: .tmp)"
};

// The run's step directories, oldest first.
std::vector<CheckpointListing> ListCheckpoints(const std::string& run_dir);

// `spec` "auto": the newest complete step (a warning when `latest` names another or a missing one), or "" for a
// fresh start. Any other `spec` is a step directory that must be complete (CheckpointError otherwise).
std::string ResolveResume(const std::string& run_dir, const std::string& spec);

class CheckpointReader {
 public:
  // Reads manifest.pb; a missing or unparsable manifest, or one from a newer format, is a CheckpointError.
  explicit CheckpointReader(const std::string& step_dir);
  ~CheckpointReader();

  const std::string& dir() const { return dir_; }
  const Manifest& manifest() const { return manifest_; }
  bool Has(const std::string& name) const;
  const TensorEntry& Tensor(const std::string& name) const;  // throws naming the tensor

  // Sizes and XXH3 of files i with i % parts == part; one message per bad file (empty: all good).
  std::vector<std::string> VerifyFiles(int part = 0, int parts = 1) const;
  // Collective over `control`: each rank verifies its share of the files; every rank throws the same
  // CheckpointError listing every bad file if any is bad.
  void VerifyCollective(cluster::ControlPlane& control) const;

  // The box [offsets, offsets + shape) of tensor `name`, assembled from the shards that overlap it.
  torch::Tensor Read(const std::string& name, const std::vector<int64_t>& offsets,
                     const std::vector<int64_t>& shape) const;
  torch::Tensor ReadFull(const std::string& name) const;
  // Like Read, into an existing tensor (e.g. the model's parameter): `out`'s shape is the box's shape.
  void ReadInto(const std::string& name, const std::vector<int64_t>& offsets, torch::Tensor& out) const;
  // Checks a tensor's global shape and dtype before loading it into a model (a config whose model shape
  // differs from the checkpoint's is a CheckpointError naming the tensor, expected and found).
  void ExpectTensor(const std::string& name, const std::vector<int64_t>& global_shape, torch::ScalarType dtype) const;

 private:
  const ShardFile& Open(const std::string& file) const;

  std::string dir_;
  Manifest manifest_;
  std::map<std::string, int> index_;  // tensor name -> position in manifest_.tensors()
  mutable std::mutex mu_;
  mutable std::map<std::string, std::unique_ptr<ShardFile>> open_;
};

}  // namespace lcl::checkpoint
