// Building the neighbour table from per-class features, as the official one was: similarity
// w_tt*tt + w_it*(it + ti) + w_ii*ii over L2-normalised class features (image-image only without
// text features), the other classes ranked and split into intervals, one class drawn per interval.
// The features come from trainer/class_features.h (a safetensors file or the model's vision tower).
//
//   FeatureMatrix img = trainer::ReadFeatureMatrix("class_features.safetensors", "image_features");  // [C, D]
//   auto sim = ClassSimilarity(img, nullptr, {});                  // [C, C]
//   auto nbrs = DrawNeighbors(sim, /*intervals=*/36, /*seed=*/0);  // nbrs[c]: 36 classes, nearest first
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sampler/class_index.h"
#include "sampler/pairs_file.h"

namespace lcl::sampler {

struct FeatureMatrix {
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<float> data;  // [rows, cols] row-major
};

struct SimilarityWeights {
  double tt = 0.5;  // text-text
  double it = 0.8;  // image-text and text-image (each)
  double ii = 0.5;  // image-image
};

// [C, C] class similarity. `text` may be null: then image-image only (w_ii * ii).
std::vector<std::vector<double>> ClassSimilarity(const FeatureMatrix& image, const FeatureMatrix* text,
                                                 const SimilarityWeights& weights);

// For each class, the others ranked by similarity (ties by index) and split into `intervals`
// near-equal slices; one class drawn uniformly per slice, nearest slice first. Pure in (sim,
// intervals, seed).
std::vector<std::vector<int>> DrawNeighbors(const std::vector<std::vector<double>>& sim, int intervals, uint64_t seed);

// The official table for `classes` (rows of the neighbour lists index into it): up to `samples`
// images per class (seeded draw from its train and val images) and, per neighbour, one of its
// images.
PairsTable MakePairsTable(const std::vector<ClassImages>& classes, const std::vector<std::vector<int>>& neighbors,
                          int samples, uint64_t seed);

}  // namespace lcl::sampler
