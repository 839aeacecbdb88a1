// Reading per-class feature files for `lcl data neighbors`: F32/F16/BF16 tensors become the float matrices the
// sampler ranks, and a wrong file or tensor is a DataError naming the file, the tensor and what was expected.
#include "trainer/class_features.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "checkpoint/safetensors.h"
#include "cluster/errors.h"
#include "tests/test_util.h"

namespace lcl::trainer {
namespace {

using lcl::testing::ExpectErrorMentions;
using lcl::testing::TempDir;

std::vector<float> Floats(const torch::Tensor& t) {
  torch::Tensor f = t.to(torch::kFloat32).contiguous();
  return std::vector<float>(f.data_ptr<float>(), f.data_ptr<float>() + f.numel());
}

TEST(ReadFeatureMatrix, ReadsF32F16AndBf16TensorsAsTheirFloatValues) {
  const TempDir dir("class_features");
  const std::string path = dir / "f.safetensors";
  torch::manual_seed(3);
  const torch::Tensor image = torch::randn({4, 3});
  const torch::Tensor text = torch::randn({4, 3}).to(torch::kFloat16);
  const torch::Tensor bf16 = torch::tensor({1.f, -3.f, 0.5f, 2.f}).reshape({2, 2}).to(torch::kBFloat16);
  checkpoint::WriteSafetensors(path, {{"image_features", image}, {"text_features", text}, {"b", bf16}});

  const sampler::FeatureMatrix f = ReadFeatureMatrix(path, "image_features");
  EXPECT_EQ(f.rows, 4);
  EXPECT_EQ(f.cols, 3);
  EXPECT_EQ(f.data, Floats(image));
  const sampler::FeatureMatrix t = ReadFeatureMatrix(path, "text_features");
  EXPECT_EQ(t.rows, 4);
  EXPECT_EQ(t.data, Floats(text));  // every half is exactly a float
  const sampler::FeatureMatrix b = ReadFeatureMatrix(path, "b");
  EXPECT_EQ(b.rows, 2);
  EXPECT_EQ(b.data, (std::vector<float>{1.f, -3.f, 0.5f, 2.f}));
}

TEST(ReadFeatureMatrix, AMissingTensorOrAnotherShapeOrDtypeNamesTheFileTheTensorAndWhatWasExpected) {
  const TempDir dir("class_features");
  const std::string path = dir / "f.safetensors";
  checkpoint::WriteSafetensors(path, {{"image_features", torch::zeros({2, 2})},
                                      {"cube", torch::zeros({2, 2, 1})},
                                      {"ids", torch::zeros({2, 2}, torch::kInt64)}});
  ExpectErrorMentions<DataError>([&] { ReadFeatureMatrix(path, "absent"); },
                                 {path, "no tensor \"absent\"", "[classes, dim]", "\"image_features\""});
  ExpectErrorMentions<DataError>([&] { ReadFeatureMatrix(path, "cube"); },
                                 {path, "\"cube\"", "2-D F32/F16/BF16 [classes, dim]", "F32 [2, 2, 1]"});
  ExpectErrorMentions<DataError>([&] { ReadFeatureMatrix(path, "ids"); },
                                 {path, "\"ids\"", "2-D F32/F16/BF16 [classes, dim]", "I64 [2, 2]"});
}

TEST(ReadFeatureMatrix, AMissingOrMalformedFileIsADataErrorNamingIt) {
  const TempDir dir("class_features");
  const std::string missing = dir / "none.safetensors";
  ExpectErrorMentions<DataError>([&] { ReadFeatureMatrix(missing, "image_features"); },
                                 {missing, "\"image_features\"", "[classes, dim]"});
  const std::string text = dir / "notes.txt";
  std::ofstream(text) << "these are not features, just a longer line of text";
  ExpectErrorMentions<DataError>([&] { ReadFeatureMatrix(text, "image_features"); },
                                 {text, "\"image_features\"", "expected a safetensors file"});
  // A file cut inside the tensor's bytes: the header promises more than is there.
  const std::string cut = dir / "cut.safetensors";
  checkpoint::WriteSafetensors(cut, {{"image_features", torch::ones({8, 8})}});
  std::filesystem::resize_file(cut, std::filesystem::file_size(cut) - 16);
  ExpectErrorMentions<DataError>([&] { ReadFeatureMatrix(cut, "image_features"); }, {cut, "\"image_features\""});
}

}  // namespace
}  // namespace lcl::trainer
