// Neighbour tables from class features: the weighted similarity checked by hand, interval draws, and the
// official table it makes (reading feature files is tested with trainer/class_features).
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "cluster/errors.h"
#include "sampler/neighbors.h"

namespace lcl::sampler {
namespace {

FeatureMatrix Matrix(int64_t rows, int64_t cols, std::vector<float> data) { return {rows, cols, std::move(data)}; }

TEST(ClassSimilarity, MatchesTheOfficialWeightedSumComputedByHand) {
  FeatureMatrix image = Matrix(3, 2, {1, 0, 0, 2, 1, 1});  // normalised: e1, e2, (e1+e2)/sqrt2
  FeatureMatrix text = Matrix(3, 2, {3, 0, 1, 0, 0, 1});   // e1, e1, e2
  auto sim = ClassSimilarity(image, &text, {});
  const double r = 1 / std::sqrt(2.0);
  // (0, 2): tt = e1.e2 = 0; it = i0.t2 = 0; ti = t0.i2 = r; ii = i0.i2 = r.
  EXPECT_NEAR(sim[0][2], 0.5 * 0 + 0.8 * (0 + r) + 0.5 * r, 1e-6);
  // (1, 0): tt = 1; it = i1.t0 = 0; ti = t1.i0 = 1; ii = 0.
  EXPECT_NEAR(sim[1][0], 0.5 * 1 + 0.8 * (0 + 1) + 0.5 * 0, 1e-6);
  auto image_only = ClassSimilarity(image, nullptr, {});
  EXPECT_NEAR(image_only[0][2], 0.5 * r, 1e-6);
  EXPECT_NEAR(image_only[0][1], 0.0, 1e-6);
  FeatureMatrix wrong = Matrix(2, 2, {1, 0, 0, 1});
  EXPECT_THROW(ClassSimilarity(image, &wrong, {}), DataError);
}

TEST(DrawNeighbors, DrawsOneClassPerSimilarityIntervalNearestFirst) {
  // Nine classes on a quarter circle: for class 0 the others rank 1, 2, ..., 8.
  std::vector<float> data;
  for (int j = 0; j < 9; ++j) {
    data.push_back(float(std::cos(j * 10 * M_PI / 180)));
    data.push_back(float(std::sin(j * 10 * M_PI / 180)));
  }
  auto sim = ClassSimilarity(Matrix(9, 2, data), nullptr, {});
  std::set<int> seen;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    auto n = DrawNeighbors(sim, 4, seed);
    ASSERT_EQ(n[0].size(), 4u);
    for (int k = 0; k < 4; ++k) {
      EXPECT_TRUE(n[0][k] == 2 * k + 1 || n[0][k] == 2 * k + 2) << "interval " << k << " drew " << n[0][k];
      seen.insert(n[0][k]);
    }
    EXPECT_EQ(n, DrawNeighbors(sim, 4, seed));
  }
  EXPECT_EQ(seen.size(), 8u);  // both members of every interval get drawn
  EXPECT_EQ(DrawNeighbors(sim, 36, 0)[0], (std::vector<int>{1, 2, 3, 4, 5, 6, 7, 8}));
}

TEST(MakePairsTable, WritesTheOfficialFormatWithDrawnNeighbours) {
  std::vector<ClassImages> classes;
  for (int i = 0; i < 3; ++i) {
    ClassImages c;
    c.synset = {i + 1, "n" + std::to_string(i), "class" + std::to_string(i), ""};
    for (int k = 0; k < 5; ++k) c.train.push_back("train/n" + std::to_string(i) + "/" + std::to_string(k) + ".JPEG");
    classes.push_back(c);
  }
  PairsTable t = MakePairsTable(classes, {{2, 1}, {0, 2}, {1, 0}}, 3, 7);
  ASSERT_EQ(t.size(), 3u);
  EXPECT_EQ(t.classes()[0].samples.size(), 3u);
  EXPECT_EQ(t.classes()[0].neighbors[0].class_id, "3");
  EXPECT_EQ(t.NeighborIndex(0, 1), 1);
  const std::string& img = t.classes()[0].neighbors[0].image_path;
  EXPECT_EQ(img.rfind("train/n2/", 0), 0u) << img;
}

}  // namespace
}  // namespace lcl::sampler
