// Per-class features for building the neighbour table (`lcl data neighbors`): image features computed from a model
// directory's frozen CLIP vision tower (`--model DIR`), or read from a safetensors file (`--image-features`,
// `--text-features`). An image's feature is the tower's selected-layer output (the layer the projector reads:
// mm_vision_select_layer, class token dropped) averaged over its patches and L2-normalised; a class's feature is the
// mean over up to `images_per_class` of its training images, spread evenly over its sorted file list. Images go
// through the sampler's ImageLoader (expand-to-square, resize to the tower's size, CLIP normalisation; a bad image is
// replaced from its class as in training).
//
//   ClassFeatureOptions o;  // 100 images per class
//   torch::Tensor f = ComputeClassImageFeatures("runs/tiny-model", index.root, index.classes, o);  // [C, Cv]
//   sampler::FeatureMatrix m = ToFeatureMatrix(f);
//   sampler::FeatureMatrix text = ReadFeatureMatrix("class_features.safetensors", "text_features");  // [C, D]
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "model/clip_vision.h"
#include "model/model_config.h"
#include "sampler/class_index.h"
#include "sampler/episode.h"
#include "sampler/image_io.h"
#include "sampler/neighbors.h"

namespace lcl::trainer {

struct ClassFeatureOptions {
  int images_per_class = 100;  // fewer when a class has fewer images
  int batch = 32;              // images per tower forward
  int workers = 2;             // decoding threads
};

// The vision tower of `model_dir` (config.json + safetensors; LLaVA names
// "model.vision_tower.vision_tower.*" or a bare CLIP checkpoint's "vision_model.*"), weights in
// float32. Reads only the tower's tensors. Throws lcl::ConfigError / lcl::CheckpointError naming
// the file and tensor when something is missing or mis-shaped.
lcl::model::ClipVisionModel LoadVisionTower(const std::string& model_dir, lcl::model::ModelConfig* config);

// [classes.size(), vision hidden size] float32, rows in the order of `classes`. Throws
// lcl::DataError for a class with no images, or when bad images exceed the loader's limit.
torch::Tensor ComputeClassImageFeatures(const std::string& model_dir, const std::string& root,
                                        const std::vector<sampler::ClassImages>& classes,
                                        const ClassFeatureOptions& options);

// Decodes `refs` into [n, 3, S, S] on `workers` threads (each image is independent; the loader is thread-safe); a
// bad image of refs[i] is replaced from *pools[i] (its class's images), as in training.
torch::Tensor LoadImages(sampler::ImageLoader& loader, const std::vector<sampler::ImageRef>& refs,
                         const std::vector<const std::vector<std::string>*>& pools, int workers);

// A 2-D float tensor as the sampler's row-major matrix.
sampler::FeatureMatrix ToFeatureMatrix(const torch::Tensor& features);

// Reads tensor `name`, a 2-D F32, F16 or BF16 [classes, dim] tensor, from the safetensors file `path` (read with
// checkpoint::SafetensorsFile). Throws lcl::DataError naming the file and tensor on a missing tensor, another shape
// or dtype, or a malformed file.
sampler::FeatureMatrix ReadFeatureMatrix(const std::string& path, const std::string& name);

}  // namespace lcl::trainer
