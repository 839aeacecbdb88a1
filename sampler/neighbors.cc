// Class features -> similarity -> interval draws -> the official pairs table.
#include "sampler/neighbors.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "cluster/errors.h"
#include "sampler/rng.h"

namespace lcl::sampler {
namespace {

// Rows scaled to unit length, so dot products are cosine similarities (as CLIP's are compared).
std::vector<float> Normalised(const FeatureMatrix& m) {
  std::vector<float> out = m.data;
  for (int64_t r = 0; r < m.rows; ++r) {
    double n = 0;
    for (int64_t c = 0; c < m.cols; ++c) n += double(out[r * m.cols + c]) * out[r * m.cols + c];
    const float inv = n > 0 ? float(1 / std::sqrt(n)) : 0.f;
    for (int64_t c = 0; c < m.cols; ++c) out[r * m.cols + c] *= inv;
  }
  return out;
}

double Dot(const std::vector<float>& a, int64_t i, const std::vector<float>& b, int64_t j, int64_t d) {
  double s = 0;
  for (int64_t k = 0; k < d; ++k) s += double(a[i * d + k]) * b[j * d + k];
  return s;
}

}  // namespace

std::vector<std::vector<double>> ClassSimilarity(const FeatureMatrix& image, const FeatureMatrix* text,
                                                 const SimilarityWeights& w) {
  if (text != nullptr && (text->rows != image.rows || text->cols != image.cols)) {
    throw DataError("text features are [" + std::to_string(text->rows) + ", " + std::to_string(text->cols) +
                    "] but image features are [" + std::to_string(image.rows) + ", " + std::to_string(image.cols) +
                    "]; both must be [classes, dim] in the same class order");
  }
  const int64_t c = image.rows, d = image.cols;
  const std::vector<float> im = Normalised(image);
  const std::vector<float> tx = text != nullptr ? Normalised(*text) : std::vector<float>();
  std::vector<std::vector<double>> sim(size_t(c), std::vector<double>(size_t(c), 0.0));
  for (int64_t i = 0; i < c; ++i) {
    for (int64_t j = 0; j < c; ++j) {
      double s = w.ii * Dot(im, i, im, j, d);
      if (text != nullptr) s += w.tt * Dot(tx, i, tx, j, d) + w.it * (Dot(im, i, tx, j, d) + Dot(tx, i, im, j, d));
      sim[size_t(i)][size_t(j)] = s;
    }
  }
  return sim;
}

std::vector<std::vector<int>> DrawNeighbors(const std::vector<std::vector<double>>& sim, int intervals, uint64_t seed) {
  const int c = int(sim.size());
  std::vector<std::vector<int>> out(static_cast<size_t>(c));
  for (int i = 0; i < c; ++i) {
    std::vector<int> others;
    for (int j = 0; j < c; ++j) {
      if (j != i) others.push_back(j);
    }
    std::stable_sort(others.begin(), others.end(),
                     [&](int a, int b) { return sim[size_t(i)][size_t(a)] > sim[size_t(i)][size_t(b)]; });
    const int m = int(others.size()), n = std::min(intervals, m);
    CounterRng rng({seed, uint64_t(i), 0x6e6569676862ULL});  // "neighb"
    for (int k = 0; k < n; ++k) {
      const int lo = k * m / n, hi = (k + 1) * m / n;  // [lo, hi), never empty since n <= m
      out[size_t(i)].push_back(others[size_t(lo + int(rng.Below(uint64_t(hi - lo))))]);
    }
  }
  return out;
}

PairsTable MakePairsTable(const std::vector<ClassImages>& classes, const std::vector<std::vector<int>>& neighbors,
                          int samples, uint64_t seed) {
  std::vector<ClassPairs> rows;
  for (size_t i = 0; i < classes.size(); ++i) {
    std::vector<std::string> pool = classes[i].train;
    pool.insert(pool.end(), classes[i].val.begin(), classes[i].val.end());
    if (pool.empty()) throw DataError("class " + classes[i].synset.wnid + " has no images; cannot list samples");
    CounterRng rng({seed, uint64_t(i), 0x73616d70ULL});  // "samp"
    rng.Shuffle(pool);
    if (pool.size() > size_t(samples)) pool.resize(size_t(samples));
    rows.push_back({std::to_string(classes[i].synset.id), classes[i].synset.name, pool, {}});
  }
  for (size_t i = 0; i < classes.size(); ++i) {
    for (int j : neighbors[i]) {
      const std::vector<std::string>& s = rows[size_t(j)].samples;
      CounterRng rng({seed, uint64_t(i), uint64_t(j), 0x696d67ULL});
      rows[i].neighbors.push_back({rows[size_t(j)].class_id, rows[size_t(j)].class_name, s[rng.Below(s.size())]});
    }
  }
  return PairsTable::FromClasses(std::move(rows), "neighbour table");
}

}  // namespace lcl::sampler
