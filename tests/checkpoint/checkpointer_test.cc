// Checkpointer on 2 and 4 ranks: the commit protocol, async saves, retention, abandonment when one rank fails,
// collective verification of bad files, and resharded reads (another layout reads the same global tensors).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>

#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/checkpointer.h"
#include "cluster/control_plane.h"
#include "cluster/errors.h"
#include "tests/test_main.h"
#include "tests/test_util.h"

namespace lcl::checkpoint {
namespace {
namespace fs = std::filesystem;
using lcl::testing::ExpectErrorMentions;

// Global tensors every rank can rebuild: W [8 * world, 6] sharded by rows, B [5] owned by rank 0.
torch::Tensor GlobalW(int world, int64_t step) {
  return torch::arange(8 * world * 6, torch::kFloat).reshape({8 * world, 6}) + step;
}
torch::Tensor GlobalB(int64_t step) { return torch::arange(5, torch::kLong) * step; }

CheckpointState StateAt(int rank, int world, int64_t step) {
  CheckpointState s;
  s.shards.push_back({"w", GlobalW(world, step).narrow(0, rank * 8, 8), {8 * world, 6}, {rank * 8, 0}});
  if (rank == 0) s.shards.push_back({"b", GlobalB(step), {5}, {0}});
  s.sampler.set_epoch(1);
  s.sampler.set_next_index(step * 16);
  s.optimizer_step = step;
  s.config = "model { preset: \"tiny\" }";
  s.rng_cpu = "rng-of-rank-" + std::to_string(rank);
  return s;
}

class CheckpointerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    rank_ = lcl::testing::Mpi().rank();
    world_ = lcl::testing::Mpi().size();
    // Same directory on every rank (rank 0 makes it).
    dir_ = std::make_unique<lcl::testing::TempDir>("ckptr", MPI_COMM_WORLD);
    run_ = dir_->path();
  }
  void TearDown() override { dir_.reset(); }  // collective: every rank is done before it goes
  CheckpointOptions Options(bool async) {
    CheckpointOptions o;
    o.run_dir = run_;
    o.async = async;
    o.keep_last = 0;
    return o;
  }
  int rank_ = 0, world_ = 1;
  std::unique_ptr<lcl::testing::TempDir> dir_;
  std::string run_;
};

TEST_F(CheckpointerTest, AStepRenamedButWithoutLatestCountsAsCommitted) {
  // `latest` as a directory: rank 0 renames step_N.tmp to step_N, then cannot replace `latest`.
  if (rank_ == 0) fs::create_directories(fs::path(run_) / "checkpoints/latest/blocker");
  MPI_Barrier(MPI_COMM_WORLD);
  Checkpointer ckpt(MPI_COMM_WORLD, Options(/*async=*/false));
  ckpt.Save(7, StateAt(rank_, world_, 7));
  const SaveResult r = ckpt.Wait();
  EXPECT_TRUE(r.committed) << r.reason;
  MPI_Barrier(MPI_COMM_WORLD);
  EXPECT_EQ(ResolveResume(run_, "auto"), run_ + "/checkpoints/" + Checkpointer::StepDirName(7));
}

TEST_F(CheckpointerTest, SyncAndAsyncSavesCommitAManifestAndMoveLatest) {
  for (bool async : {false, true}) {
    Checkpointer ckpt(MPI_COMM_WORLD, Options(async));
    const int64_t step = async ? 20 : 10;
    ckpt.Save(step, StateAt(rank_, world_, step));
    SaveResult r = ckpt.Wait();
    EXPECT_TRUE(r.committed) << r.reason;
    EXPECT_GT(r.bytes, 0u);
    MPI_Barrier(MPI_COMM_WORLD);
    const std::string dir = ResolveResume(run_, "auto");
    EXPECT_EQ(dir, run_ + "/checkpoints/" + Checkpointer::StepDirName(step));
    CheckpointReader reader(dir);
    const Manifest& m = reader.manifest();
    EXPECT_EQ(m.step(), step);
    EXPECT_EQ(m.files_size(), world_);
    EXPECT_EQ(m.rng_size(), world_);
    EXPECT_EQ(m.rng(world_ - 1).cpu(), "rng-of-rank-" + std::to_string(world_ - 1));
    EXPECT_EQ(m.sampler().next_index(), step * 16);
    EXPECT_EQ(m.tensors_size(), 2);
    EXPECT_TRUE(reader.ReadFull("w").equal(GlobalW(world_, step)));
    EXPECT_TRUE(reader.ReadFull("b").equal(GlobalB(step)));
    EXPECT_TRUE(reader.VerifyFiles().empty());
    EXPECT_FALSE(fs::exists(dir + ".tmp"));
  }
}

TEST_F(CheckpointerTest, ADeferredSnapshotSavesTheStateOfItsStepThoughTheTensorsChangeAfterReleaseState) {
  CheckpointOptions o = Options(true);
  o.defer_snapshot = true;
  Checkpointer ckpt(MPI_COMM_WORLD, o);
  // A strided view (copied inside Save()) beside contiguous tensors (read in place until ReleaseState()).
  const torch::Tensor m = torch::arange(12, torch::kFloat).reshape({3, 4});
  for (int64_t step = 1; step <= 3; ++step) {
    CheckpointState s = StateAt(rank_, world_, step);
    if (rank_ == 0) s.shards.push_back({"mt", (m * step).t(), {4, 3}, {0, 0}});
    std::vector<torch::Tensor> live;
    for (const LocalShard& shard : s.shards) live.push_back(shard.data);
    ckpt.Save(step, std::move(s));
    if (step == 2) std::this_thread::sleep_for(std::chrono::milliseconds(50));  // let the writer start
    ckpt.ReleaseState();
    for (torch::Tensor& t : live) t.mul_(-3).add_(1000);  // the optimizer step, as soon as the fence returns
    const SaveResult r = ckpt.Wait();
    ASSERT_TRUE(r.committed) << r.reason;
    MPI_Barrier(MPI_COMM_WORLD);
    CheckpointReader reader(run_ + "/checkpoints/" + Checkpointer::StepDirName(step));
    EXPECT_TRUE(reader.ReadFull("w").equal(GlobalW(world_, step))) << "step " << step;
    EXPECT_TRUE(reader.ReadFull("b").equal(GlobalB(step))) << "step " << step;
    EXPECT_TRUE(reader.ReadFull("mt").equal((m * step).t())) << "step " << step;
    EXPECT_TRUE(reader.VerifyFiles().empty());
  }
}

TEST_F(CheckpointerTest, AnotherLayoutReadsTheSameGlobalTensors) {
  Checkpointer ckpt(MPI_COMM_WORLD, Options(false));
  ckpt.Save(7, StateAt(rank_, world_, 7));
  ASSERT_TRUE(ckpt.last().committed);
  CheckpointReader reader(ResolveResume(run_, "auto"));
  const torch::Tensor w = GlobalW(world_, 7);
  // A TP-like column split into 3 (across the saved row shards) and an uneven row split.
  for (int part = 0; part < 3; ++part) {
    EXPECT_TRUE(reader.Read("w", {0, part * 2}, {8 * world_, 2}).equal(w.narrow(1, part * 2, 2)));
  }
  EXPECT_TRUE(reader.Read("w", {3, 1}, {8 * world_ - 5, 4}).equal(w.narrow(0, 3, 8 * world_ - 5).narrow(1, 1, 4)));
  // A flat ZeRO-style partition of the row-major data.
  EXPECT_TRUE(reader.Read("b", {2}, {3}).equal(GlobalB(7).narrow(0, 2, 3)));
}

TEST_F(CheckpointerTest, RetentionKeepsTheLastNAndEveryKthAfterCommitting) {
  CheckpointOptions o = Options(true);
  o.keep_last = 2;
  o.keep_every = 4;
  Checkpointer ckpt(MPI_COMM_WORLD, o);
  for (int64_t step = 1; step <= 7; ++step) ckpt.Save(step, StateAt(rank_, world_, step));
  ckpt.Wait();
  MPI_Barrier(MPI_COMM_WORLD);
  std::vector<int64_t> kept;
  for (const auto& c : ListCheckpoints(run_)) kept.push_back(c.step);
  EXPECT_EQ(kept, (std::vector<int64_t>{4, 6, 7}));
}

TEST_F(CheckpointerTest, AFailureOnOneRankAbandonsTheSaveEverywhereAndTrainingGoesOn) {
  Checkpointer ckpt(MPI_COMM_WORLD, Options(false));
  ckpt.Save(1, StateAt(rank_, world_, 1));
  CheckpointState bad = StateAt(rank_, world_, 2);
  if (rank_ == world_ - 1) {
    // A dtype a checkpoint cannot hold: this rank's write fails.
    bad.shards.push_back({"c", torch::zeros({2}, torch::kComplexFloat), {2}, {0}});
  }
  ckpt.Save(2, bad);
  EXPECT_FALSE(ckpt.last().committed);
  EXPECT_NE(ckpt.last().reason.find("rank " + std::to_string(world_ - 1)), std::string::npos) << ckpt.last().reason;
  MPI_Barrier(MPI_COMM_WORLD);
  EXPECT_FALSE(fs::exists(run_ + "/checkpoints/step_00000002.tmp"));
  EXPECT_FALSE(fs::exists(run_ + "/checkpoints/step_00000002"));
  EXPECT_EQ(ResolveResume(run_, "auto"), run_ + "/checkpoints/step_00000001");
  ckpt.Save(3, StateAt(rank_, world_, 3));  // the next save works
  EXPECT_TRUE(ckpt.last().committed);
}

// After an abandoned save every rank deletes its own shard while rank 0 deletes the directory; a plain remove_all
// on rank 0 gave up when a file vanished under it and left step_*.tmp behind (about 1 save in 50 at np 4).
TEST_F(CheckpointerTest, AbandonedSavesNeverLeaveTheirTmpDirectoryBehindWhileRanksCleanUpTogether) {
  Checkpointer ckpt(MPI_COMM_WORLD, Options(false));
  int left_behind = 0;
  for (int64_t step = 1; step <= 150; ++step) {
    CheckpointState bad = StateAt(rank_, world_, step);
    if (rank_ == world_ - 1) bad.shards.push_back({"c", torch::zeros({2}, torch::kComplexFloat), {2}, {0}});
    ckpt.Save(step, bad);
    ASSERT_FALSE(ckpt.last().committed);
    MPI_Barrier(MPI_COMM_WORLD);
    const std::string tmp = run_ + "/checkpoints/" + Checkpointer::StepDirName(step) + ".tmp";
    if (fs::exists(tmp)) {
      ++left_behind;
      fs::remove_all(tmp);  // keep the next steps independent
    }
    MPI_Barrier(MPI_COMM_WORLD);
  }
  EXPECT_EQ(left_behind, 0) << "abandoned saves whose .tmp directory stayed";
}

TEST_F(CheckpointerTest, ShardsThatDoNotTileTheTensorAreRejectedByRankZero) {
  Checkpointer ckpt(MPI_COMM_WORLD, Options(false));
  CheckpointState s = StateAt(rank_, world_, 1);
  s.shards.push_back({"b", GlobalB(1), {5}, {0}});  // every rank now claims b (rank 0 twice)
  ckpt.Save(1, s);
  EXPECT_FALSE(ckpt.last().committed);
  EXPECT_NE(ckpt.last().reason.find("tensor 'b'"), std::string::npos) << ckpt.last().reason;
}

TEST_F(CheckpointerTest, VerificationNamesAFlippedByteATruncatedAndAMissingShardOnEveryRank) {
  Checkpointer ckpt(MPI_COMM_WORLD, Options(false));
  ckpt.Save(5, StateAt(rank_, world_, 5));
  MPI_Barrier(MPI_COMM_WORLD);
  const std::string dir = run_ + "/checkpoints/step_00000005";
  CheckpointReader reader(dir);
  cluster::ControlPlane control(MPI_COMM_WORLD);
  reader.VerifyCollective(control);  // intact: no throw
  const std::string f0 = dir + "/" + reader.manifest().files(0).name();
  if (rank_ == 0) {
    std::fstream f(f0, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-3, std::ios::end);
    f.put('');
  }
  MPI_Barrier(MPI_COMM_WORLD);
  ExpectErrorMentions<CheckpointError>([&] { reader.VerifyCollective(control); }, {f0 + ": checksum"});
  MPI_Barrier(MPI_COMM_WORLD);
  const std::string f1 = dir + "/" + reader.manifest().files(1).name();
  if (rank_ == 0) {
    fs::resize_file(f1, fs::file_size(f1) - 10);
    fs::remove(f0);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  ExpectErrorMentions<CheckpointError>([&] { reader.VerifyCollective(control); }, {f0 + ": missing", "(truncated)"});
  ExpectErrorMentions<CheckpointError>(
      [&] {
        reader.ExpectTensor("w", {8 * world_, 7}, torch::kFloat);
      },
      {"model expects"});
}

}  // namespace
}  // namespace lcl::checkpoint
