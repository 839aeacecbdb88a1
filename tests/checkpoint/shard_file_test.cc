// Shard files, listing and resume resolution, manifest checks (single process).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/checkpointer.h"
#include "checkpoint/checksum.h"
#include "checkpoint/fs_util.h"
#include "checkpoint/shard_file.h"
#include "cluster/errors.h"

namespace lcl::checkpoint {
namespace {
namespace fs = std::filesystem;

fs::path TempDir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("lcl_ckpt_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

template <class F>
std::string ErrorOf(F&& f) {
  try {
    f();
  } catch (const CheckpointError& e) {
    return e.what();
  }
  return "";
}

TEST(ShardFile, RoundTripsEveryDtypeAndReportsSizeAndChecksumOfTheBytesOnDisk) {
  fs::path dir = TempDir("roundtrip");
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
  EXPECT_NE(ErrorOf([&] { f.View("nope"); }).find("has no tensor 'nope'"), std::string::npos);
  fs::remove_all(dir);
}

TEST(ShardFile, TruncatedOrCorruptFilesAreClearErrorsNamingTheFile) {
  fs::path dir = TempDir("bad");
  const std::string path = (dir / "s.safetensors").string();
  WriteShardFile(path, {{"w", torch::ones({1000})}});
  fs::resize_file(path, fs::file_size(path) - 100);
  std::string msg = ErrorOf([&] { ShardFile f(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;

  { std::ofstream(path, std::ios::binary | std::ios::trunc) << std::string("\x10\0\0\0\0\0\0\0{not json}xxxxxx", 24); }
  msg = ErrorOf([&] { ShardFile f(path); });
  EXPECT_NE(msg.find("corrupt header"), std::string::npos) << msg;

  { std::ofstream(path, std::ios::trunc) << "abc"; }
  msg = ErrorOf([&] { ShardFile f(path); });
  EXPECT_NE(msg.find("truncated: 3 bytes"), std::string::npos) << msg;

  msg = ErrorOf([&] { ShardFile f((dir / "missing.safetensors").string()); });
  EXPECT_NE(msg.find("missing.safetensors"), std::string::npos) << msg;

  // A rejected file gives its descriptor back (a constructor that throws runs no destructor): a resume that
  // probes many bad shards must not run out of descriptors.
  { std::ofstream(path, std::ios::binary | std::ios::trunc) << std::string("\x10\0\0\0\0\0\0\0{not json}xxxxxx", 24); }
  auto open_fds = [] { return std::distance(fs::directory_iterator("/proc/self/fd"), fs::directory_iterator()); };
  const auto before = open_fds();
  for (int i = 0; i < 50; ++i) ErrorOf([&] { ShardFile f(path); });
  EXPECT_EQ(open_fds(), before);
  fs::remove_all(dir);
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
  fs::path run = TempDir("list");
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
  fs::remove_all(run);
}

TEST(ResolveResume, AutoTakesTheNewestCompleteStepWhateverLatestSays) {
  fs::path run = TempDir("resume");
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
  EXPECT_NE(ErrorOf([&] { ResolveResume(run.string(), incomplete); }).find("not a complete checkpoint"),
            std::string::npos);
  fs::remove_all(run);
}

TEST(CheckpointReader, ManifestFromANewerFormatIsRefusedWithTheFix) {
  fs::path run = TempDir("newer");
  fs::path d = run / "checkpoints/step_00000001";
  fs::create_directories(d);
  Manifest m;
  m.set_format_version(kFormatVersion + 1);
  WriteFileAtomic((d / "manifest.pb").string(), m.SerializeAsString());
  std::string msg = ErrorOf([&] { CheckpointReader r(d.string()); });
  EXPECT_NE(msg.find("newer than this lcl reads"), std::string::npos) << msg;
  WriteFileAtomic((d / "manifest.pb").string(), "garbage that is not a manifest \xff\xff");
  msg = ErrorOf([&] { CheckpointReader r(d.string()); });
  EXPECT_NE(msg.find("does not parse"), std::string::npos) << msg;
  fs::remove_all(run);
}

}  // namespace
}  // namespace lcl::checkpoint
