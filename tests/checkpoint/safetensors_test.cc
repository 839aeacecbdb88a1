// The safetensors codec: round trips in every supported dtype, slices and byte ranges, sharded checkpoints with an
// index, a clear CheckpointError (file and tensor named) for every kind of bad file, the dtype mapping, shape
// printing, and the mapped file both readers stand on.
#include "checkpoint/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "checkpoint/mapped_file.h"
#include "cluster/errors.h"
#include "tests/test_util.h"

namespace lcl::checkpoint {
namespace {

using lcl::testing::ExpectErrorMentions;
using lcl::testing::TempDir;

// Writes raw bytes: an 8-byte header length, the header text, then `data_bytes` zero bytes.
void WriteRaw(const std::string& path, const std::string& header, size_t data_bytes, int64_t header_len = -1) {
  std::ofstream out(path, std::ios::binary);
  uint64_t len = header_len < 0 ? header.size() : static_cast<uint64_t>(header_len);
  out.write(reinterpret_cast<const char*>(&len), 8);
  out << header << std::string(data_bytes, '\0');
}

TEST(Safetensors, RoundTripsEveryDtypeAndReadsSlices) {
  TempDir dir("st_roundtrip");
  torch::manual_seed(20);
  torch::Tensor f32 = torch::randn({5, 6});
  NamedTensors tensors = {{"a.f32", f32},
                          {"b.f16", torch::randn({3}).to(torch::kFloat16)},
                          {"c.bf16", torch::randn({2, 2, 2}).to(torch::kBFloat16)},
                          {"d.i64", torch::arange(7)},
                          {"e.scalar", torch::tensor(3.5f)},
                          {"f.f64", torch::randn({4}, torch::kFloat64)},
                          {"g.i32", torch::randint(-9, 9, {3}, torch::kInt32)},
                          {"h.u8", torch::randint(0, 255, {5}, torch::kUInt8)},
                          {"i.bool", torch::randn({6}) > 0},
                          {"j.strided", torch::randn({3, 4}).t()}};
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
  // Row ranges by pread match the mapped view.
  torch::Tensor rows = torch::empty({2, 6});
  file.ReadBytes("a.f32", 2 * 6 * sizeof(float), rows.numel() * sizeof(float), rows.data_ptr());
  EXPECT_TRUE(torch::equal(rows, f32.narrow(0, 2, 2)));
  ExpectErrorMentions<CheckpointError>([&] { file.ReadBytes("a.f32", 100, 24, rows.data_ptr()); },
                                       {"x.safetensors", "a.f32", "120"});
}

TEST(Safetensors, WriterRefusesRepeatedNamesAndDtypesTheFormatCannotHoldAndLeavesNoFile) {
  TempDir dir("st_refuse");
  const std::string p = dir / "x.safetensors";
  const NamedTensors twice = {{"w", torch::ones({2})}, {"w", torch::ones({2})}};
  ExpectErrorMentions<CheckpointError>([&] { WriteSafetensors(p, twice); }, {p, "'w'", "twice"});
  const NamedTensors complex = {{"c", torch::zeros({2}, torch::kComplexFloat)}};
  ExpectErrorMentions<CheckpointError>([&] { WriteSafetensors(p, complex); }, {p, "'c'", "ComplexFloat"});
  EXPECT_FALSE(std::filesystem::exists(p));
  EXPECT_FALSE(std::filesystem::exists(p + ".tmp"));
}

TEST(Safetensors, EncodedBytesAreTheFormatsLayout) {
  // 8-byte little-endian header length, JSON header padded to 8 bytes, then the data back to back.
  std::string bytes;
  const uint64_t n = EncodeSafetensors("mem", {{"a", torch::tensor({1.0f, 2.0f})}, {"b", torch::tensor({7L})}}, {},
                                       [&](const void* p, size_t k) { bytes.append(static_cast<const char*>(p), k); });
  ASSERT_EQ(n, bytes.size());
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  EXPECT_EQ(header_len % 8, 0u);
  EXPECT_EQ(bytes.size(), 8 + header_len + 2 * sizeof(float) + sizeof(int64_t));
  const std::string header = bytes.substr(8, header_len);
  EXPECT_NE(header.find(R"("a":{"data_offsets":[0,8],"dtype":"F32","shape":[2]})"), std::string::npos) << header;
  EXPECT_NE(header.find(R"("b":{"data_offsets":[8,16],"dtype":"I64","shape":[1]})"), std::string::npos) << header;
  float a1 = 0;
  std::memcpy(&a1, bytes.data() + 8 + header_len + sizeof(float), sizeof(float));
  EXPECT_EQ(a1, 2.0f);
}

TEST(Safetensors, DtypeNamesMapBothWaysAndUnknownOnesAreErrors) {
  for (torch::ScalarType t : {torch::kFloat32, torch::kFloat64, torch::kFloat16, torch::kBFloat16, torch::kInt64,
                              torch::kInt32, torch::kInt16, torch::kInt8, torch::kUInt8, torch::kBool}) {
    EXPECT_EQ(DtypeFromName(DtypeName(t), "test"), t) << DtypeName(t);
  }
  EXPECT_EQ(DtypeName(torch::kBFloat16), "BF16");
  ExpectErrorMentions<CheckpointError>([] { DtypeName(torch::kComplexDouble); }, {"ComplexDouble", "convert"});
  ExpectErrorMentions<CheckpointError>([] { DtypeFromName("Q4", "tensor 'w'"); }, {"tensor 'w'", "Q4"});
}

TEST(ShapeString, PrintsDimsInBracketsAndAScalarAsEmptyBrackets) {
  EXPECT_EQ(ShapeString(std::vector<int64_t>{2, 3}), "[2, 3]");
  EXPECT_EQ(ShapeString(torch::zeros({4, 0, 1}).sizes()), "[4, 0, 1]");
  EXPECT_EQ(ShapeString(torch::tensor(1.0f).sizes()), "[]");
}

TEST(MappedFile, MapsTheWholeFileReadsRangesAndMovesOwnership) {
  TempDir dir("st_mapped");
  const std::string p = dir / "bytes";
  { std::ofstream(p, std::ios::binary) << "0123456789"; }
  MappedFile file(p);
  ASSERT_EQ(file.size(), 10u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(file.data()), 10), "0123456789");
  char got[4] = {};
  file.ReadAt(3, 4, got);
  EXPECT_EQ(std::string(got, 4), "3456");
  ExpectErrorMentions<CheckpointError>([&] { file.ReadAt(8, 4, got); }, {p, "[8, 12)", "10 bytes"});
  MappedFile moved(std::move(file));
  EXPECT_EQ(moved.size(), 10u);
  EXPECT_EQ(moved.data()[9], '9');
  EXPECT_EQ(file.data(), nullptr);  // the moved-from file owns nothing
  ExpectErrorMentions<CheckpointError>([&] { MappedFile missing(dir / "missing"); }, {dir / "missing", "No such file"});
}

TEST(Safetensors, ShardedCheckpointWithIndexReadsBack) {
  TempDir dir("st_sharded");
  NamedTensors tensors;
  for (int i = 0; i < 5; ++i) tensors.emplace_back("t" + std::to_string(i), torch::full({100}, float(i)));
  auto files = WriteSafetensorsCheckpoint(dir.path(), tensors, /*max_shard_bytes=*/900);
  EXPECT_EQ(files.size(), 3u);
  EXPECT_TRUE(std::filesystem::exists(dir / "model.safetensors.index.json"));
  SafetensorsCheckpoint ckpt = SafetensorsCheckpoint::Open(dir.path());
  for (const auto& [name, t] : tensors) EXPECT_TRUE(torch::equal(ckpt.File(name).Read(name), t)) << name;
  // Small enough: one file, no index.
  TempDir single("st_single");
  EXPECT_EQ(WriteSafetensorsCheckpoint(single.path(), tensors, 1 << 20), std::vector<std::string>{"model.safetensors"});
  EXPECT_FALSE(std::filesystem::exists(single / "model.safetensors.index.json"));
}

TEST(Safetensors, BadFilesGiveErrorsNamingFileAndTensor) {
  TempDir dir("st_bad");
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
  WriteRaw(p, R"({"w":{"dtype":"U16","shape":[3],"data_offsets":[0,6]}})", 6);  // valid, no torch dtype here
  SafetensorsFile u16(p);
  ExpectErrorMentions<CheckpointError>([&] { u16.Read("w"); }, {p, "'w'", "U16", "not supported"});
  ExpectErrorMentions<CheckpointError>([&] { SafetensorsCheckpoint::Open(dir / "missing"); }, {"missing"});
}

}  // namespace
}  // namespace lcl::checkpoint
