// Image decoding and preprocessing for the vision tower: OpenCV decode by content (JPEG, PNG, CMYK,
// grayscale), checks for bad files, an optional jigsaw piece cut from the decoded image, expand2square padding
// with the CLIP mean colour (or white, as the official transform), antialiased resize and CLIP normalisation into
// a float [3, S, S] tensor; and an ImageLoader that replaces bad images deterministically and stops the run when
// too many are bad.
//
//   lcl::sampler::ImageSpec spec;  // 224 px, CLIP mean/std
//   torch::Tensor x = lcl::sampler::LoadImage("/data/imagenet/train/n01440764/n01440764_10026.JPEG", spec);
#pragma once

#include <torch/torch.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "cluster/errors.h"
#include "sampler/episode.h"

namespace lcl::sampler {

// The colour expand2square pads a non-square image with.
enum class PadColor {
  kMean,   // the CLIP mean (normalises to 0): LLaVA's processor
  kWhite,  // (255, 255, 255): the official LCL Expand2square transform
};
// "mean" | "white"; anything else is a ConfigError naming the choices.
inline PadColor ParsePadColor(const std::string& name) {
  if (name == "mean") return PadColor::kMean;
  if (name == "white") return PadColor::kWhite;
  throw ConfigError("unknown pad colour '" + name + "' (data.pad_color): use mean | white");
}

struct ImageSpec {
  int size = 224;                                                      // the tower's input side
  std::array<float, 3> mean = {0.48145466f, 0.4578275f, 0.40821073f};  // CLIP, RGB
  std::array<float, 3> std = {0.26862954f, 0.26130258f, 0.27577711f};
  int64_t max_pixels = 89478485;  // PIL's decompression-bomb limit: a bigger image is rejected unread
  PadColor pad = PadColor::kMean;
};

// Reads and preprocesses one file, or the piece `tile` of it (cut from the decoded image before padding, as the
// official jigsaw crops), into [3, size, size] float32 (RGB). Throws lcl::DataError "path: reason" for a
// missing/unreadable/empty file, a directory, an unknown format, a truncated JPEG/PNG, an image over max_pixels, or
// one with fewer pixels than the tile's grid. NotBuiltError without OpenCV.
torch::Tensor LoadImage(const std::string& path, const ImageSpec& spec, const Tile& tile = {});
// The same from bytes already in memory; `path` is only used in messages.
torch::Tensor PreprocessImageBytes(const std::vector<uint8_t>& bytes, const std::string& path, const ImageSpec& spec,
                                   const Tile& tile = {});

// Loads episode images from an ImageNet root, replacing bad ones. Thread-safe.
class ImageLoader {
 public:
  // max_bad_fraction: the run stops (DataError) once bad images exceed this fraction of those
  // loaded, counted over at least `min_window` images so that one early bad file does not end a
  // run.
  ImageLoader(std::string root, ImageSpec spec, double max_bad_fraction = 0.01, uint64_t min_window = 100);

  // Loads `ref` (its path relative to the root, or absolute; its tile); when it is bad, loads the same tile of a
  // replacement drawn from `pool` (the class's images) by a hash of the bad path and the attempt number, so every
  // run and every DP layout picks the same one (and every piece of a jigsaw the same image).
  torch::Tensor Load(const ImageRef& ref, const std::vector<std::string>& pool);

  uint64_t loaded() const { return loaded_; }
  uint64_t bad() const { return bad_; }
  const ImageSpec& spec() const { return spec_; }
  // The most recent bad-image messages (path: reason), at most 16.
  std::vector<std::string> recent_errors() const;

 private:
  std::string FullPath(const std::string& path) const;  // an absolute path as is, else under the root
  void RecordBad(const std::string& message);

  std::string root_;
  ImageSpec spec_;
  double max_bad_fraction_;
  uint64_t min_window_;
  std::atomic<uint64_t> loaded_{0};
  std::atomic<uint64_t> bad_{0};
  mutable std::mutex mu_;
  std::vector<std::string> recent_errors_;
};

}  // namespace lcl::sampler
