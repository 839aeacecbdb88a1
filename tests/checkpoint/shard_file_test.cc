// Shard files (one safetensors format with model files, both ways; checksums; header validation), listing and
// resume resolution, manifest checks (single process).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/checkpointer.h"
#include "checkpoint/checksum.h"
#include "checkpoint/fs_util.h"
#include "checkpoint/safetensors.h"
#include "checkpoint/shard_file.h"
#include "checkpoint/snapshot.h"
#include "cluster/errors.h"
#include "tests/test_util.h"

namespace lcl::checkpoint {
namespace {
namespace fs = std::filesystem;

using lcl::testing::ErrorOf;
using lcl::testing::TempDir;

TEST(ShardFile, RoundTripsEveryDtypeAndReportsSizeAndChecksumOfTheBytesOnDisk) {
  const TempDir tmp("ckpt_roundtrip");
  const fs::path dir = tmp.path();
  torch::manual_seed(1);
  TensorList list = {{"f32", torch::randn({3, 5})},
                     {"f64", torch::randn({7}, torch::kDouble)},
                     {"bf16", torch::randn({2, 2}).to(torch::kBFloat16)},
                     {"f16", torch::randn({4}).to(torch::kHalf)},
                     {"i32", torch::randint(-9, 9, {6}, torch::kInt)},
                     {"i64", torch::randint(-9, 9, {1, 1, 3}, torch::kLong)},
                     {"u8", torch::randint(0, 255, {5}, torch::kByte)},
                     {"empty", torch::zeros({0, 4})},
                     {"noncontig", torch::randn({4, 3}).t()}};
  const std::string path = (dir / "s.safetensors").string();
  FileEntry e = WriteShardFile(path, list);
  uint64_t size = 0;
  EXPECT_EQ(e.xxh3(), Xxh3File(path, &size));
  EXPECT_EQ(e.size(), size);
  EXPECT_EQ(e.size(), fs::file_size(path));
  ShardFile f(path);
  ASSERT_EQ(f.entries().size(), list.size());
  for (const auto& [name, t] : list) EXPECT_TRUE(f.View(name).equal(t)) << name;
  EXPECT_NE(ErrorOf<CheckpointError>([&] { f.View("nope"); }).find("has no tensor 'nope'"), std::string::npos);
}

TEST(ShardFile, TruncatedOrCorruptFilesAreClearErrorsNamingTheFile) {
  const TempDir tmp("ckpt_bad");
  const fs::path dir = tmp.path();
  const std::string path = (dir / "s.safetensors").string();
  WriteShardFile(path, {{"w", torch::ones({1000})}});
  fs::resize_file(path, fs::file_size(path) - 100);
  std::string msg = ErrorOf<CheckpointError>([&] { ShardFile f(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;

  { std::ofstream(path, std::ios::binary | std::ios::trunc) << std::string("\x10\0\0\0\0\0\0\0{not json}xxxxxx", 24); }
  msg = ErrorOf<CheckpointError>([&] { ShardFile f(path); });
  EXPECT_NE(msg.find("corrupt header"), std::string::npos) << msg;

  { std::ofstream(path, std::ios::trunc) << "abc"; }
  msg = ErrorOf<CheckpointError>([&] { ShardFile f(path); });
  EXPECT_NE(msg.find("truncated: 3 bytes"), std::string::npos) << msg;

  msg = ErrorOf<CheckpointError>([&] { ShardFile f((dir / "missing.safetensors").string()); });
  EXPECT_NE(msg.find("missing.safetensors"), std::string::npos) << msg;

  // A rejected file gives its descriptor back (a constructor that throws runs no destructor): a resume that
  // probes many bad shards must not run out of descriptors.
  { std::ofstream(path, std::ios::binary | std::ios::trunc) << std::string("\x10\0\0\0\0\0\0\0{not json}xxxxxx", 24); }
  auto open_fds = [] { return std::distance(fs::directory_iterator("/proc/self/fd"), fs::directory_iterator()); };
  const auto before = open_fds();
  for (int i = 0; i < 50; ++i) ErrorOf<CheckpointError>([&] { ShardFile f(path); });
  EXPECT_EQ(open_fds(), before);
}

// Writes raw bytes: the 8-byte little-endian header length, the header text, then `data_bytes` zero bytes.
void WriteRaw(const std::string& path, const std::string& header, size_t data_bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  const uint64_t len = header.size();
  out.write(reinterpret_cast<const char*>(&len), 8);
  out << header << std::string(data_bytes, '\0');
}

TEST(ShardFile, RejectsOverlappingTensors) {
  const TempDir tmp("ckpt_overlap");
  const fs::path dir = tmp.path();
  const std::string path = (dir / "s.safetensors").string();
  // Each entry is valid alone; together "b" aliases the last 4 bytes of "a".
  WriteRaw(path,
           R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
           R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
           12);
  const std::string msg = ErrorOf<CheckpointError>([&] { ShardFile f(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("'a'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'b'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("overlap"), std::string::npos) << msg;
}

TEST(ShardFile, RejectsHeaderEntriesWhoseShapeDoesNotMatchTheirBytesOrWhoseDtypeIsUnknown) {
  const TempDir tmp("ckpt_entries");
  const fs::path dir = tmp.path();
  const std::string path = (dir / "s.safetensors").string();
  WriteRaw(path, R"({"w":{"dtype":"F32","shape":[2,4],"data_offsets":[0,24]}})", 24);
  std::string msg = ErrorOf<CheckpointError>([&] { ShardFile f(path); });
  EXPECT_NE(msg.find("[2, 4]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("32 bytes"), std::string::npos) << msg;
  WriteRaw(path, R"({"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,2]}})", 2);
  msg = ErrorOf<CheckpointError>([&] { ShardFile f(path); });
  EXPECT_NE(msg.find("Q4"), std::string::npos) << msg;
  WriteRaw(path, R"({"w":{"dtype":"U16","shape":[1],"data_offsets":[0,2]}})", 2);  // valid safetensors, no torch dtype
  msg = ErrorOf<CheckpointError>([&] { ShardFile f(path); });
  EXPECT_NE(msg.find("'w'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("U16"), std::string::npos) << msg;
}

// Tensors of every dtype a checkpoint holds, one of them strided.
TensorList MixedTensors() {
  torch::manual_seed(3);
  return {{"f32", torch::randn({3, 5})},
          {"f64", torch::randn({7}, torch::kDouble)},
          {"bf16", torch::randn({2, 2}).to(torch::kBFloat16)},
          {"i32", torch::randint(-9, 9, {6}, torch::kInt)},
          {"i64", torch::randint(-9, 9, {1, 1, 3}, torch::kLong)},
          {"u8", torch::randint(0, 255, {5}, torch::kByte)},
          {"bool", torch::randn({4}) > 0},
          {"scalar", torch::tensor(2.5f)},
          {"noncontig", torch::randn({4, 3}).t()}};
}

TEST(ShardFile, AShardWrittenByTheCheckpointWriterReadsBackAsASafetensorsFile) {
  const TempDir tmp("ckpt_shard_as_st");
  const fs::path dir = tmp.path();
  const std::string path = (dir / "shard-r00000-of-00001.safetensors").string();
  const TensorList list = MixedTensors();
  WriteShardFile(path, list);
  SafetensorsFile file(path);
  ASSERT_EQ(file.Names().size(), list.size());
  EXPECT_EQ(file.metadata().at("format"), "lcl-checkpoint-shard");
  for (const auto& [name, t] : list) {
    torch::Tensor back = file.Read(name);
    EXPECT_EQ(back.scalar_type(), t.scalar_type()) << name;
    EXPECT_EQ(back.sizes(), t.sizes()) << name;
    EXPECT_TRUE(back.equal(t)) << name;
  }
}

TEST(ShardFile, AFileWrittenByWriteSafetensorsReadsBackAsAShard) {
  const TempDir tmp("ckpt_st_as_shard");
  const fs::path dir = tmp.path();
  const std::string path = (dir / "model.safetensors").string();
  const TensorList list = MixedTensors();
  WriteSafetensors(path, list, {{"format", "pt"}});
  ShardFile shard(path);
  ASSERT_EQ(shard.entries().size(), list.size());
  for (const auto& [name, t] : list) {
    EXPECT_EQ(shard.entries().at(name).dtype, t.scalar_type()) << name;
    EXPECT_TRUE(shard.View(name).equal(t)) << name;
    torch::Tensor copy = torch::empty(t.sizes(), t.options());
    shard.ReadBytes(name, 0, copy.numel() * copy.element_size(), copy.data_ptr());
    EXPECT_TRUE(copy.equal(t)) << name;
  }
}

TEST(ShardFile, WritingFromASnapshotGivesTheSameBytesAndChecksumAsFromTheTensors) {
  const TempDir tmp("ckpt_snapshot");
  const fs::path dir = tmp.path();
  TensorList list = MixedTensors();
  list.pop_back();  // a Snapshot holds contiguous tensors only
  std::vector<torch::Tensor> live, copies;
  for (const auto& [name, t] : list) {
    live.push_back(t);
    copies.push_back(torch::empty_like(t));
  }
  Snapshot snapshot(live, copies, /*chunk_bytes=*/8);
  const FileEntry direct = WriteShardFile((dir / "a.safetensors").string(), list);
  const FileEntry streamed = WriteShardFile((dir / "b.safetensors").string(), list, &snapshot);
  snapshot.Close();
  EXPECT_EQ(streamed.size(), direct.size());
  EXPECT_EQ(streamed.xxh3(), direct.xxh3());
  EXPECT_EQ(streamed.xxh3(), Xxh3File((dir / "b.safetensors").string()));
  EXPECT_EQ(ReadFile((dir / "a.safetensors").string()), ReadFile((dir / "b.safetensors").string()));
}

TEST(CheckpointReader, VerifyFilesFindsAFlippedByteInAShardByItsChecksum) {
  const TempDir tmp("ckpt_verify");
  const fs::path dir = tmp.path();
  const std::string path = (dir / "shard-r00000-of-00001.safetensors").string();
  Manifest m;
  m.set_format_version(kFormatVersion);
  *m.add_files() = WriteShardFile(path, {{"w", torch::arange(256, torch::kFloat)}});
  WriteFileAtomic((dir / "manifest.pb").string(), m.SerializeAsString());
  CheckpointReader reader(dir.string());
  EXPECT_TRUE(reader.VerifyFiles().empty());
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-5, std::ios::end);
    f.put('\x7f');
  }
  const std::vector<std::string> problems = reader.VerifyFiles();
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_NE(problems[0].find(path), std::string::npos) << problems[0];
  EXPECT_NE(problems[0].find("(corrupt)"), std::string::npos) << problems[0];
}

TEST(CheckpointReader, AShardMissingFromAStepSaysTheCheckpointIsIncompleteAndHowToResume) {
  const TempDir tmp("ckpt_missing_shard");
  const fs::path run = tmp.path();
  const fs::path dir = run / "checkpoints" / Checkpointer::StepDirName(4);
  fs::create_directories(dir);
  // "w" [4] split in two halves, one file each, as two ranks would save it.
  Manifest m;
  m.set_format_version(kFormatVersion);
  TensorEntry* w = m.add_tensors();
  w->set_name("w");
  w->set_dtype("F32");
  w->add_global_shape(4);
  for (int r = 0; r < 2; ++r) {
    const std::string name = "shard-r0000" + std::to_string(r) + "-of-00002.safetensors";
    *m.add_files() = WriteShardFile((dir / name).string(), {{"w", torch::arange(2 * r, 2 * r + 2, torch::kFloat)}});
    ShardSlice* s = w->add_shards();
    s->set_rank(r);
    s->set_file(name);
    s->add_offsets(2 * r);
    s->add_shape(2);
  }
  WriteFileAtomic((dir / "manifest.pb").string(), m.SerializeAsString());
  EXPECT_TRUE(CheckpointReader(dir.string()).ReadFull("w").equal(torch::arange(4, torch::kFloat)));

  fs::remove(dir / "shard-r00001-of-00002.safetensors");
  CheckpointReader reader(dir.string());
  EXPECT_TRUE(reader.Read("w", {0}, {2}).equal(torch::arange(2, torch::kFloat)));  // the other half still reads
  lcl::testing::ExpectErrorMentions<CheckpointError>(
      [&] { reader.ReadFull("w"); },
      {dir.string(), "shard file shard-r00001-of-00002.safetensors listed in manifest.pb is missing",
       "the checkpoint is incomplete", "resume from an older step (`lcl ckpt list " + run.string() + "`)"});
}

void MakeStep(const fs::path& run, int64_t step, bool manifest, bool tmp = false) {
  fs::path d = run / "checkpoints" / (Checkpointer::StepDirName(step) + (tmp ? ".tmp" : ""));
  fs::create_directories(d);
  if (manifest) {
    Manifest m;
    m.set_format_version(kFormatVersion);
    m.set_step(step);
    WriteFileAtomic((d / "manifest.pb").string(), m.SerializeAsString());
  }
}

TEST(ListCheckpoints, ReportsCompleteAndIncompleteStepsOldestFirst) {
  const TempDir tmp("ckpt_list");
  const fs::path run = tmp.path();
  MakeStep(run, 20, true);
  MakeStep(run, 10, true);
  MakeStep(run, 30, false);
  MakeStep(run, 40, true, /*tmp=*/true);
  auto all = ListCheckpoints(run.string());
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(all[0].step, 10);
  EXPECT_TRUE(all[0].complete);
  EXPECT_EQ(all[2].status, "incomplete (no manifest.pb)");
  EXPECT_EQ(all[3].status, "incomplete (unfinished save: .tmp)");
  EXPECT_EQ(Checkpointer::CleanStaleTmp(run.string()), 1);
  EXPECT_EQ(ListCheckpoints(run.string()).size(), 3u);
}

TEST(ResolveResume, AutoTakesTheNewestCompleteStepWhateverLatestSays) {
  const TempDir tmp("ckpt_resume");
  const fs::path run = tmp.path();
  EXPECT_EQ(ResolveResume(run.string(), "auto"), "");  // fresh start
  MakeStep(run, 10, true);
  MakeStep(run, 20, true);
  MakeStep(run, 30, false);  // a save killed before its manifest
  EXPECT_EQ(ResolveResume(run.string(), "auto"), (run / "checkpoints/step_00000020").string());
  // Killed after step 20's rename, before `latest` moved: step 20 is committed.
  WriteFileAtomic((run / "checkpoints/latest").string(), "step_00000010\n");
  EXPECT_EQ(ResolveResume(run.string(), "auto"), (run / "checkpoints/step_00000020").string());
  WriteFileAtomic((run / "checkpoints/latest").string(), "step_00000099\n");  // names a missing step
  EXPECT_EQ(ResolveResume(run.string(), "auto"), (run / "checkpoints/step_00000020").string());
  const std::string incomplete = (run / "checkpoints/step_00000030").string();
  EXPECT_NE(
      ErrorOf<CheckpointError>([&] { ResolveResume(run.string(), incomplete); }).find("not a complete checkpoint"),
      std::string::npos);
}

TEST(CheckpointReader, ManifestFromANewerFormatIsRefusedWithTheFix) {
  const TempDir tmp("ckpt_newer");
  const fs::path run = tmp.path();
  fs::path d = run / "checkpoints/step_00000001";
  fs::create_directories(d);
  Manifest m;
  m.set_format_version(kFormatVersion + 1);
  WriteFileAtomic((d / "manifest.pb").string(), m.SerializeAsString());
  std::string msg = ErrorOf<CheckpointError>([&] { CheckpointReader r(d.string()); });
  EXPECT_NE(msg.find("newer than this lcl reads"), std::string::npos) << msg;
  WriteFileAtomic((d / "manifest.pb").string(), "garbage that is not a manifest \xff\xff");
  msg = ErrorOf<CheckpointError>([&] { CheckpointReader r(d.string()); });
  EXPECT_NE(msg.find("does not parse"), std::string::npos) << msg;
}

TEST(ResolveResume, AutoSkipsAnEmptyManifestAndTakesTheOlderGoodStep) {
  const TempDir tmp("ckpt_empty_manifest");
  const fs::path run = tmp.path();
  MakeStep(run, 10, true);
  const fs::path torn = run / "checkpoints/step_00000020";
  fs::create_directories(torn);
  std::ofstream(torn / "manifest.pb").flush();  // 0 bytes: parses as an all-default manifest
  WriteFileAtomic((run / "checkpoints/latest").string(), "step_00000020\n");
  const auto all = ListCheckpoints(run.string());
  ASSERT_EQ(all.size(), 2u);
  EXPECT_FALSE(all[1].complete);
  EXPECT_EQ(all[1].status, "incomplete (manifest.pb is empty)");
  EXPECT_EQ(ResolveResume(run.string(), "auto"), (run / "checkpoints/step_00000010").string());
  lcl::testing::ExpectErrorMentions<CheckpointError>([&] { CheckpointReader r(torn.string()); },
                                                     {torn.string(), "manifest.pb is empty", "another step"});
}

}  // namespace
}  // namespace lcl::checkpoint
