// The tower-feature cache against the tower itself: what it returns is bitwise what the tower returns, from memory,
// from disk and across cache objects (runs); a changed image or tower never reads another's entry; a corrupt entry is
// reported, recomputed and replaced; the memory tier keeps its budget; a directory that cannot serve (a file, not a
// cache, full) warns and runs without the disk tier, or is an error when required; ranks filling one entry at once
// leave a valid entry.
#include "trainer/feature_cache.h"

#include <gtest/gtest.h>
#include <sys/mount.h>
#include <torch/torch.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "checkpoint/safetensors.h"
#include "cluster/errors.h"
#include "cluster/log.h"
#include "model/model_config.h"
#include "tests/test_util.h"

namespace lcl::trainer {
namespace {

namespace fs = std::filesystem;
using lcl::testing::ExpectErrorMentions;
using lcl::testing::TempDir;

// Collects WARNING lines while it lives.
class WarningCapture : public google::LogSink {
 public:
  WarningCapture() { google::AddLogSink(this); }
  ~WarningCapture() override { google::RemoveLogSink(this); }
  void send(google::LogSeverity severity, const char*, const char*, int, const struct ::tm*, const char* message,
            size_t length) override {
    if (severity != google::GLOG_WARNING) return;
    std::lock_guard<std::mutex> lock(mu_);
    text_ += std::string(message, length) + "\n";
  }
  std::string text() {
    std::lock_guard<std::mutex> lock(mu_);
    return text_;
  }

 private:
  std::mutex mu_;
  std::string text_;
};

struct Tower {
  Tower() : config(lcl::model::ModelConfig::FromPreset("tiny")) {
    torch::manual_seed(11);
    model = lcl::model::ClipVisionModel(config.vision, config.VisionLayersUsed());
    model->eval();
  }
  std::vector<int64_t> shape() const { return {config.vision.num_patches(), config.vision.hidden_size}; }
  torch::Tensor Pixels(int n, int seed) const {
    torch::manual_seed(seed);
    return torch::randn({n, 3, config.vision.image_size, config.vision.image_size});
  }
  // The tower, counting the images it is run on.
  FeatureCache::Tower Counted() {
    return [this](const torch::Tensor& px) {
      runs += px.size(0);
      return model(px);
    };
  }
  FeatureCache Open(const std::string& dir, int64_t memory_bytes = int64_t(1) << 30, bool required = false) {
    FeatureCacheOptions o;
    o.dir = dir;
    o.memory_bytes = memory_bytes;
    o.required = required;
    return FeatureCache(o, TowerFingerprint(*model), shape(), torch::kFloat32);
  }

  lcl::model::ModelConfig config;
  lcl::model::ClipVisionModel model{nullptr};
  int64_t runs = 0;
};

TEST(FeatureCache, ServesBitwiseTheTowersFeaturesFromMemoryFromDiskAndInALaterRun) {
  const TempDir dir("feature_cache");
  Tower t;
  const torch::Tensor px = t.Pixels(5, 1);
  const torch::Tensor want = t.model(px);  // [5, P, Cv], the whole batch at once as without a cache
  {
    FeatureCache cache = t.Open(dir.path());
    ASSERT_TRUE(cache.disk_enabled());
    EXPECT_TRUE(torch::equal(cache.Features(px, t.Counted()), want));  // cold: computed
    EXPECT_EQ(t.runs, 5);
    EXPECT_TRUE(torch::equal(cache.Features(px, t.Counted()), want));  // warm: memory
    EXPECT_EQ(t.runs, 5);
    const FeatureCacheStats s = cache.stats();
    EXPECT_EQ(s.misses, 5);
    EXPECT_EQ(s.memory_hits, 5);
    EXPECT_EQ(s.written, 5);
  }
  FeatureCache later = t.Open(dir.path());  // another run: the disk
  EXPECT_TRUE(torch::equal(later.Features(px.flip({0}), t.Counted()), want.flip({0})));
  EXPECT_EQ(t.runs, 5);
  EXPECT_EQ(later.stats().disk_hits, 5);
  EXPECT_TRUE(fs::exists(later.EntryPath(FeatureCache::KeyOf(px[2].contiguous()))));
}

TEST(FeatureCache, AnImageRepeatedInABatchRunsTheTowerOnceAndOnlyMissingImagesAreComputed) {
  Tower t;
  FeatureCache cache = t.Open("", /*memory_bytes=*/int64_t(1) << 30);
  const torch::Tensor a = t.Pixels(2, 2);
  const torch::Tensor b = t.Pixels(1, 3);
  const torch::Tensor batch = torch::cat({a[0].unsqueeze(0), a[0].unsqueeze(0), a[1].unsqueeze(0)});
  EXPECT_TRUE(torch::equal(cache.Features(batch, t.Counted()), t.model(batch)));
  EXPECT_EQ(t.runs, 2);
  const torch::Tensor mixed = torch::cat({b, a[1].unsqueeze(0)});
  EXPECT_TRUE(torch::equal(cache.Features(mixed, t.Counted()), t.model(mixed)));
  EXPECT_EQ(t.runs, 3);  // only b
}

TEST(FeatureCache, AChangedPixelOrAChangedTowerNeverReadsAnotherEntry) {
  const TempDir dir("feature_cache");
  Tower t;
  const torch::Tensor px = t.Pixels(1, 4);
  {
    FeatureCache cache = t.Open(dir.path());
    cache.Features(px, t.Counted());
    torch::Tensor edited = px.clone();
    edited[0][1][3][5] += 1e-6f;  // one value of one pixel (another crop, padding or file edit)
    EXPECT_TRUE(torch::equal(cache.Features(edited, t.Counted()), t.model(edited)));
    EXPECT_EQ(t.runs, 2);
  }
  const std::string before = TowerFingerprint(*t.model);
  {
    torch::NoGradGuard no_grad;
    t.model->named_parameters()["vision_model.encoder.layers.0.mlp.fc1.weight"][0][0] += 0.5f;
  }
  EXPECT_NE(TowerFingerprint(*t.model), before);
  WarningCapture warnings;
  FeatureCache changed = t.Open(dir.path());
  EXPECT_TRUE(torch::equal(changed.Features(px, t.Counted()), t.model(px)));  // the new tower's, not the entry
  EXPECT_EQ(t.runs, 3);
  EXPECT_EQ(changed.stats().disk_hits, 0);
  EXPECT_NE(warnings.text().find("also holds the features of 1 other tower(s) (" + before), std::string::npos)
      << warnings.text();
}

TEST(FeatureCache, TheFingerprintIgnoresTheTopLayersTheFeaturesDoNotReach) {
  Tower t;
  ASSERT_LT(t.config.VisionLayersUsed(), t.config.vision.num_hidden_layers);
  const std::string before = TowerFingerprint(*t.model);
  torch::NoGradGuard no_grad;
  const std::string top =
      "vision_model.encoder.layers." + std::to_string(t.config.vision.num_hidden_layers - 1) + ".mlp.fc1.weight";
  t.model->named_parameters()[top][0][0] += 0.5f;
  t.model->named_parameters()["vision_model.post_layernorm.weight"][0] += 0.5f;
  EXPECT_EQ(TowerFingerprint(*t.model), before);
}

// Flips one byte of the tensor data, or cuts the file short.
void Damage(const std::string& path, bool truncate) {
  if (truncate) {
    fs::resize_file(path, fs::file_size(path) - 7);
    return;
  }
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(-10, std::ios::end);
  char c = 0;
  f.read(&c, 1);
  f.seekp(-10, std::ios::end);
  c = static_cast<char>(c ^ 0x20);
  f.write(&c, 1);
}

TEST(FeatureCache, ACorruptEntryIsReportedRecomputedAndReplacedNeverUsed) {
  for (bool truncate : {false, true}) {
    const TempDir dir("feature_cache");
    Tower t;
    const torch::Tensor px = t.Pixels(2, 5);
    const torch::Tensor want = t.model(px);
    const std::string key = FeatureCache::KeyOf(px[1].contiguous());
    std::string path;
    {
      FeatureCache cache = t.Open(dir.path());
      cache.Features(px, t.Counted());
      path = cache.EntryPath(key);
    }
    Damage(path, truncate);
    WarningCapture warnings;
    FeatureCache cache = t.Open(dir.path(), /*memory_bytes=*/0);
    EXPECT_TRUE(torch::equal(cache.Features(px, t.Counted()), want)) << "truncate " << truncate;
    EXPECT_EQ(t.runs, 3);  // 2, then the corrupt one again
    EXPECT_EQ(cache.stats().corrupt, 1);
    EXPECT_EQ(cache.stats().disk_hits, 1);
    EXPECT_NE(warnings.text().find("feature cache entry " + path + " is corrupt"), std::string::npos)
        << warnings.text();
    // Replaced: a third run reads both entries and runs nothing.
    FeatureCache again = t.Open(dir.path(), 0);
    EXPECT_TRUE(torch::equal(again.Features(px, t.Counted()), want));
    EXPECT_EQ(t.runs, 3);
    EXPECT_EQ(again.stats().corrupt, 0);
  }
}

TEST(FeatureCache, TheMemoryTierKeepsItsBudgetEvictingTheLeastRecentlyUsed) {
  Tower t;
  const int64_t entry = t.shape()[0] * t.shape()[1] * 4;
  FeatureCache cache = t.Open("", /*memory_bytes=*/2 * entry);
  const torch::Tensor px = t.Pixels(3, 6);
  auto one = [&](int i) { return px[i].unsqueeze(0); };
  cache.Features(one(0), t.Counted());
  cache.Features(one(1), t.Counted());
  cache.Features(one(0), t.Counted());  // 0 is now the most recent
  cache.Features(one(2), t.Counted());  // evicts 1
  EXPECT_EQ(t.runs, 3);
  cache.Features(one(0), t.Counted());
  EXPECT_EQ(t.runs, 3);
  cache.Features(one(1), t.Counted());
  EXPECT_EQ(t.runs, 4);
  EXPECT_EQ(cache.stats().memory_hits, 2);
}

TEST(FeatureCache, ADirectoryThatCannotServeWarnsAndRunsWithoutTheDiskTierOrIsAnErrorWhenRequired) {
  const TempDir dir("feature_cache");
  Tower t;
  const torch::Tensor px = t.Pixels(2, 7);
  const torch::Tensor want = t.model(px);
  std::ofstream(dir / "a_file") << "x";
  fs::create_directories(dir / "data/train");
  std::ofstream(dir / "data/train/img.JPEG") << "x";
  struct Case {
    std::string path, says;
  };
  for (const Case& c : {Case{dir / "a_file", "is not a directory"}, Case{dir / "a_file/below", "cannot be created"},
                        Case{dir / "data", "holds files that are not a feature cache (train"}}) {
    WarningCapture warnings;
    FeatureCache cache = t.Open(c.path);
    EXPECT_FALSE(cache.disk_enabled()) << c.path;
    EXPECT_TRUE(torch::equal(cache.Features(px, t.Counted()), want));
    EXPECT_NE(warnings.text().find("data.feature_cache '" + c.path + "' " + c.says), std::string::npos)
        << warnings.text();
    EXPECT_NE(warnings.text().find("goes on without the disk cache"), std::string::npos);
    ExpectErrorMentions<ConfigError>([&] { t.Open(c.path, 0, /*required=*/true); },
                                     {c.path, c.says, "data.feature_cache_required=true"});
  }
  EXPECT_FALSE(fs::exists(dir / "data/LCL_FEATURE_CACHE"));  // nothing written into a directory of something else
}

// Seen on 2 ranks: one rank's marker, half-written under its temporary name, made the other call the new directory
// foreign and run without the disk tier.
TEST(FeatureCache, AnotherRankCreatingTheDirectoryIsNotAForeignDirectory) {
  const TempDir dir("feature_cache");
  Tower t;
  std::ofstream(dir / "LCL_FEATURE_CACHE.tmp.4242.0") << "lcl";
  WarningCapture warnings;
  FeatureCache cache = t.Open(dir.path());
  EXPECT_TRUE(cache.disk_enabled());
  EXPECT_EQ(warnings.text(), "");
  EXPECT_TRUE(fs::exists(dir / "LCL_FEATURE_CACHE"));
}

// A real full file system: a tmpfs sized for the marker and two entries (tmpfs counts whole 4 KiB pages per file).
// Needs CAP_SYS_ADMIN (root here and in CI); a test that cannot mount fails rather than skips.
TEST(FeatureCache, AFullDiskWarnsOnceStopsWritingAndTheFeaturesStayExactOrIsAnErrorWhenRequired) {
  const TempDir dir("feature_cache");
  Tower t;
  const int64_t entry = t.shape()[0] * t.shape()[1] * 4;
  const std::string mnt = dir / "small";
  fs::create_directories(mnt);
  const int64_t pages_per_entry = (entry + 1024 + 4095) / 4096;  // the data and the header
  const std::string size = "size=" + std::to_string(4096 * (1 + 2 * pages_per_entry));
  ASSERT_EQ(::mount("tmpfs", mnt.c_str(), "tmpfs", 0, size.c_str()), 0)
      << "mount tmpfs at " << mnt << ": " << std::strerror(errno) << " (the test needs CAP_SYS_ADMIN)";
  struct Unmount {
    std::string at;
    ~Unmount() { ::umount2(at.c_str(), MNT_DETACH); }
  } unmount{mnt};
  const torch::Tensor px = t.Pixels(6, 8);
  const torch::Tensor want = t.model(px);
  {
    WarningCapture warnings;
    FeatureCache cache = t.Open(mnt);
    ASSERT_TRUE(cache.disk_enabled());
    EXPECT_TRUE(torch::equal(cache.Features(px, t.Counted()), want));
    const FeatureCacheStats s = cache.stats();
    EXPECT_EQ(s.write_failures, 1);
    EXPECT_EQ(s.written, 2);
    EXPECT_NE(warnings.text().find("No space left on device"), std::string::npos) << warnings.text();
    EXPECT_NE(warnings.text().find("no more entries are written in this run"), std::string::npos);
    for (const auto& e : fs::recursive_directory_iterator(mnt)) {
      EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << "left behind: " << e.path();
    }
    EXPECT_TRUE(torch::equal(cache.Features(px, t.Counted()), want));  // memory, and what the disk kept
  }
  fs::remove_all(mnt + "/" + TowerFingerprint(*t.model));
  FeatureCache required = t.Open(mnt, 0, /*required=*/true);
  ExpectErrorMentions<DataError>([&] { required.Features(px, t.Counted()); },
                                 {"No space left on device", "data.feature_cache_required=true"});
}

TEST(FeatureCache, RanksFillingTheSameEntriesAtOnceLeaveValidEntries) {
  const TempDir dir("feature_cache");
  Tower t;
  const torch::Tensor px = t.Pixels(4, 9);
  const torch::Tensor want = t.model(px);
  std::atomic<int> wrong{0};
  std::vector<std::thread> ranks;
  for (int r = 0; r < 4; ++r) {
    ranks.emplace_back([&] {
      FeatureCache cache = t.Open(dir.path(), 0);
      if (!cache.disk_enabled()) ++wrong;  // another rank creating the directory is not a foreign directory
      for (int k = 0; k < 3; ++k) {
        if (!torch::equal(cache.Features(px, [&](const torch::Tensor& p) { return t.model(p); }), want)) ++wrong;
      }
      if (cache.stats().corrupt != 0) ++wrong;
    });
  }
  for (auto& r : ranks) r.join();
  EXPECT_EQ(wrong.load(), 0);
  FeatureCache check = t.Open(dir.path(), 0);
  EXPECT_TRUE(torch::equal(check.Features(px, t.Counted()), want));
  EXPECT_EQ(check.stats().disk_hits, 4);
  EXPECT_EQ(t.runs, 0);
}

}  // namespace
}  // namespace lcl::trainer
