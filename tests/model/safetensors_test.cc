// Safetensors reader and writer: round trips in every supported dtype, slices, sharded checkpoints with an index,
// and a clear CheckpointError (file and tensor named) for every kind of bad file.
#include "trainer/safetensors.h"

#include <gtest/gtest.h>

#include <fstream>

#include "cluster/errors.h"
#include "tests/model/model_test_util.h"

namespace lcl::trainer {
namespace {

using testing::ExpectErrorMentions;
using testing::ScratchDir;

// Writes raw bytes: an 8-byte header length, the header text, then `data_bytes` zero bytes.
void WriteRaw(const std::string& path, const std::string& header, size_t data_bytes, int64_t header_len = -1) {
  std::ofstream out(path, std::ios::binary);
  uint64_t len = header_len < 0 ? header.size() : static_cast<uint64_t>(header_len);
  out.write(reinterpret_cast<const char*>(&len), 8);
  out << header << std::string(data_bytes, '\0');
}

TEST(Safetensors, RoundTripsEveryDtypeAndReadsSlices) {
  ScratchDir dir("st_roundtrip");
  torch::manual_seed(20);
  torch::Tensor f32 = torch::randn({5, 6});
  NamedTensors tensors = {{"a.f32", f32},
                          {"b.f16", torch::randn({3}).to(torch::kFloat16)},
                          {"c.bf16", torch::randn({2, 2, 2}).to(torch::kBFloat16)},
                          {"d.i64", torch::arange(7)},
                          {"e.scalar", torch::tensor(3.5f)}};
  WriteSafetensors(dir / "x.safetensors", tensors, {{"format", "pt"}});
  SafetensorsFile file(dir / "x.safetensors");
  EXPECT_EQ(file.Names().size(), tensors.size());
  EXPECT_EQ(file.metadata().at("format"), "pt");
  for (const auto& [name, t] : tensors) {
    torch::Tensor back = file.Read(name);
    EXPECT_EQ(back.scalar_type(), t.scalar_type()) << name;
    EXPECT_TRUE(torch::equal(back, t)) << name;
  }
  EXPECT_TRUE(torch::equal(file.ReadSlice("a.f32", 0, 2, 2), f32.narrow(0, 2, 2)));
  EXPECT_TRUE(torch::equal(file.ReadSlice("a.f32", 1, 3, 3), f32.narrow(1, 3, 3)));
  ExpectErrorMentions<CheckpointError>([&] { file.ReadSlice("a.f32", 1, 4, 3); }, {"a.f32", "[5, 6]"});
  ExpectErrorMentions<CheckpointError>([&] { file.Read("nope"); }, {"x.safetensors", "nope"});
}

TEST(Safetensors, ShardedCheckpointWithIndexReadsBack) {
  ScratchDir dir("st_sharded");
  NamedTensors tensors;
  for (int i = 0; i < 5; ++i) tensors.emplace_back("t" + std::to_string(i), torch::full({100}, float(i)));
  auto files = WriteSafetensorsCheckpoint(dir.path(), tensors, /*max_shard_bytes=*/900);
  EXPECT_EQ(files.size(), 3u);
  EXPECT_TRUE(std::filesystem::exists(dir / "model.safetensors.index.json"));
  SafetensorsCheckpoint ckpt = SafetensorsCheckpoint::Open(dir.path());
  for (const auto& [name, t] : tensors) EXPECT_TRUE(torch::equal(ckpt.File(name).Read(name), t)) << name;
  // Small enough: one file, no index.
  ScratchDir single("st_single");
  EXPECT_EQ(WriteSafetensorsCheckpoint(single.path(), tensors, 1 << 20),
            std::vector<std::string>{"model.safetensors"});
  EXPECT_FALSE(std::filesystem::exists(single / "model.safetensors.index.json"));
}

TEST(Safetensors, BadFilesGiveErrorsNamingFileAndTensor) {
  ScratchDir dir("st_bad");
  const std::string good = R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}})";
  const std::string p = dir / "bad.safetensors";
  auto open = [&] { SafetensorsFile f(p); };

  WriteRaw(p, good, 10);  // truncated data
  ExpectErrorMentions<CheckpointError>(open, {p, "'w'", "truncated"});
  WriteRaw(p, good, 24, /*header_len=*/1 << 20);  // header length past the end
  ExpectErrorMentions<CheckpointError>(open, {p, "header length"});
  { std::ofstream(p) << "abc"; }  // shorter than the length field
  ExpectErrorMentions<CheckpointError>(open, {p, "too short"});
  WriteRaw(p, R"({"w": [1, 2)", 24);  // not JSON
  ExpectErrorMentions<CheckpointError>(open, {p, "not a JSON object"});
  WriteRaw(p, R"({"w":{"dtype":"F32","shape":[2,4],"data_offsets":[0,24]}})", 24);  // shape vs bytes
  ExpectErrorMentions<CheckpointError>(open, {p, "'w'", "[2, 4]", "32 bytes"});
  WriteRaw(p, R"({"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,2]}})", 2);  // unknown dtype
  ExpectErrorMentions<CheckpointError>(open, {p, "'w'", "Q4"});
  WriteRaw(
      p,
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
      12);
  ExpectErrorMentions<CheckpointError>(open, {p, "overlap"});
  WriteRaw(p, R"({"w":{"dtype":"F64","shape":[3],"data_offsets":[0,24]}})", 24);  // valid, unsupported dtype
  SafetensorsFile f64(p);
  ExpectErrorMentions<CheckpointError>([&] { f64.Read("w"); }, {p, "'w'", "F64", "not supported"});
  ExpectErrorMentions<CheckpointError>([&] { SafetensorsCheckpoint::Open(dir / "missing"); }, {"missing"});
}

}  // namespace
}  // namespace lcl::trainer
