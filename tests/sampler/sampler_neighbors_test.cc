// Neighbour tables from class features: safetensors reading (F32/F16/BF16), the weighted similarity
// checked by hand, interval draws, and the official table it makes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "cluster/errors.h"
#include "sampler/neighbors.h"
#include "tests/sampler/test_util.h"

namespace lcl::sampler {
namespace {

// A safetensors file: 8-byte little-endian header length, JSON header, then the raw tensor bytes.
void WriteSafetensors(const std::string& path,
                      const std::vector<std::tuple<std::string, std::string, std::vector<int64_t>,
                                                   std::vector<uint8_t>>>& ts) {
  nlohmann::json h;
  std::vector<uint8_t> body;
  for (const auto& [name, dtype, shape, bytes] : ts) {
    h[name] = {{"dtype", dtype},
               {"shape", shape},
               {"data_offsets", {body.size(), body.size() + bytes.size()}}};
    body.insert(body.end(), bytes.begin(), bytes.end());
  }
  std::string header = h.dump();
  uint64_t n = header.size();
  std::vector<uint8_t> file(8);
  std::memcpy(file.data(), &n, 8);
  file.insert(file.end(), header.begin(), header.end());
  file.insert(file.end(), body.begin(), body.end());
  testing::WriteBytes(path, file);
}

template <typename T>
std::vector<uint8_t> Bytes(const std::vector<T>& v) {
  std::vector<uint8_t> out(v.size() * sizeof(T));
  std::memcpy(out.data(), v.data(), out.size());
  return out;
}

FeatureMatrix Matrix(int64_t rows, int64_t cols, std::vector<float> data) {
  return {rows, cols, std::move(data)};
}

TEST(FeatureFile, ReadsF32F16AndBf16AndNamesWhatIsMissing) {
  testing::TempDir dir;
  const std::string path = dir.path() + "/f.safetensors";
  WriteSafetensors(path,
                   {{"image_features", "F32", {2, 2}, Bytes<float>({1.f, 2.f, 3.f, -4.f})},
                    {"text_features", "F16", {1, 3}, Bytes<uint16_t>({0x3C00, 0xC000, 0x3800})},
                    {"b", "BF16", {1, 2}, Bytes<uint16_t>({0x3F80, 0xC040})}});
  FeatureMatrix f = ReadFeatureMatrix(path, "image_features");
  EXPECT_EQ(f.rows, 2);
  EXPECT_EQ(f.data, (std::vector<float>{1.f, 2.f, 3.f, -4.f}));
  EXPECT_EQ(ReadFeatureMatrix(path, "text_features").data, (std::vector<float>{1.f, -2.f, 0.5f}));
  EXPECT_EQ(ReadFeatureMatrix(path, "b").data, (std::vector<float>{1.f, -3.f}));
  try {
    ReadFeatureMatrix(path, "absent");
    FAIL();
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("no tensor \"absent\""), std::string::npos) << e.what();
  }
}

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
      EXPECT_TRUE(n[0][k] == 2 * k + 1 || n[0][k] == 2 * k + 2)
          << "interval " << k << " drew " << n[0][k];
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
    for (int k = 0; k < 5; ++k)
      c.train.push_back("train/n" + std::to_string(i) + "/" + std::to_string(k) + ".JPEG");
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
