// Optimizer state saved through the Checkpointer: saved at dp=2 with ZeRO-1 (tp=1 on 2 ranks, tp=2 on 4) it loads
// exactly into dp=1 without ZeRO and into dp=world with ZeRO again, and a resumed run is bitwise equal to an
// uninterrupted one.
#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/checkpointer.h"
#include "cluster/control_plane.h"
#include "cluster/mpi_communicator.h"
#include "cluster/process_grid.h"
#include "optim/optimizer.h"
#include "tests/optim/optim_fixtures.h"

namespace lcl::optim {
namespace {

namespace fs = std::filesystem;
using cluster::MpiCommunicator;
using testing::GlobalBatch;
using testing::kBatch;
using testing::kMlpNames;
using testing::kSpecs;
using testing::LocalOf;
using testing::MakeMlp;
using testing::MlpLoss;
using testing::MlpLr;
using testing::MlpOptions;
using testing::Rank;
using testing::RunDp;
using testing::RunResult;
using testing::SetTpGrads;
using testing::TpOptions;
using testing::TpParams;
using testing::Trainable;
using testing::World;

class OptimizerCheckpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    cluster::ControlPlane control(MPI_COMM_WORLD);
    run_ = control.BroadcastBytes((fs::temp_directory_path() / ("lcl_optim_" + std::to_string(getpid()))).string());
    if (Rank() == 0) fs::remove_all(run_);
    MPI_Barrier(MPI_COMM_WORLD);
  }
  void TearDown() override {
    MPI_Barrier(MPI_COMM_WORLD);
    if (Rank() == 0) fs::remove_all(run_);
  }
  std::string run_;
};

TEST_F(OptimizerCheckpoint, StateSavedAtDp2WithZeroLoadsExactlyIntoDp1WithoutZeroAndBack) {
  // Saved by dp=2 with ZeRO-1 (tp=1 on 2 ranks, tp=2 on 4); every element of the state is stored
  // once (the Checkpointer's commit rejects shards that do not tile each tensor).
  const int tp_size = World() >= 4 ? 2 : 1;
  cluster::ProcessGrid grid(MPI_COMM_WORLD, tp_size);
  MpiCommunicator dp(grid.dp_comm(), "dp"), tp(grid.tp_comm(), "tp");
  ASSERT_EQ(dp.size(), 2);
  std::vector<TrainableParam> params = TpParams(tp.rank(), tp.size());
  DistributedOptimizer saved(params, &dp, &tp, TpOptions(/*zero1=*/true));
  for (int s = 0; s < 2; ++s) {
    SetTpGrads(params, dp.rank(), tp.rank(), tp.size(), s);
    saved.Step(0.05);
  }
  checkpoint::CheckpointState state;
  state.shards = saved.StateShards();
  state.optimizer_step = saved.step();
  {
    checkpoint::CheckpointOptions co;
    co.run_dir = run_;
    co.async = false;
    co.fail_on_error = true;
    checkpoint::Checkpointer ckpt(MPI_COMM_WORLD, co);
    ckpt.Save(saved.step(), state);
    ASSERT_TRUE(ckpt.Wait().committed) << ckpt.last().reason;
  }
  checkpoint::CheckpointReader reader(checkpoint::ResolveResume(run_, "auto"));
  EXPECT_EQ(reader.manifest().tensors_size(), 3 * static_cast<int>(kSpecs.size()));

  // Layout B: every rank alone (dp=1, tp=1), ZeRO off, full tensors.
  MpiCommunicator self(MPI_COMM_SELF, "self");
  std::vector<TrainableParam> full = TpParams(0, 1, /*sharded=*/false);
  for (auto& p : full) p.param.detach().zero_();
  DistributedOptimizer alone(full, &self, nullptr, TpOptions(/*zero1=*/false));
  alone.LoadState(reader, state.optimizer_step);
  EXPECT_EQ(alone.step(), 2);
  for (const checkpoint::LocalShard& s : state.shards) {
    const std::string kind = s.name.substr(0, s.name.find('.', 6) + 1);  // "optim.master." etc.
    const std::string param = s.name.substr(kind.size());
    torch::Tensor have = kind == "optim.master."    ? alone.master(param)
                         : kind == "optim.exp_avg." ? alone.exp_avg(param)
                                                    : alone.exp_avg_sq(param);
    for (size_t d = 0; d < s.offsets.size(); ++d) have = have.narrow(d, s.offsets[d], s.data.size(d));
    EXPECT_TRUE(have.equal(s.data)) << s.name;
  }
  // The parameters of both layouts agree, and the masters are the parameters.
  for (size_t i = 0; i < kSpecs.size(); ++i) {
    EXPECT_TRUE(LocalOf(full[i].param, i, tp.rank(), tp.size()).equal(params[i].param)) << kSpecs[i].name;
    EXPECT_TRUE(alone.master(kSpecs[i].name).equal(full[i].param)) << kSpecs[i].name;
  }

  // Layout C: dp = world, tp = 1, ZeRO on again: each rank's rows equal layout B's.
  MpiCommunicator world(MPI_COMM_WORLD, "dp_all");
  std::vector<TrainableParam> again = TpParams(0, 1, /*sharded=*/false);
  DistributedOptimizer spread(again, &world, nullptr, TpOptions(/*zero1=*/true));
  spread.LoadState(reader, state.optimizer_step);
  for (size_t i = 0; i < kSpecs.size(); ++i) {
    const std::string& n = kSpecs[i].name;
    const int64_t rows = kSpecs[i].global[0], per = (rows + World() - 1) / World();
    const int64_t lo = std::min(rows, per * Rank()), len = std::min(rows, lo + per) - lo;
    EXPECT_TRUE(spread.master(n).equal(alone.master(n).narrow(0, lo, len))) << n;
    EXPECT_TRUE(spread.exp_avg(n).equal(alone.exp_avg(n).narrow(0, lo, len))) << n;
    EXPECT_TRUE(spread.exp_avg_sq(n).equal(alone.exp_avg_sq(n).narrow(0, lo, len))) << n;
    EXPECT_TRUE(again[i].param.equal(full[i].param)) << n;
  }
}

TEST_F(OptimizerCheckpoint, ResumedTrainingIsBitwiseEqualToUninterrupted) {
  MpiCommunicator dp(MPI_COMM_WORLD, "dp");
  const OptimizerOptions o = MlpOptions();
  RunResult straight = RunDp(o, 4, 1, &dp);

  std::vector<torch::Tensor> p = MakeMlp();
  auto train = [&](DistributedOptimizer& opt, int from, int to) {
    const int64_t per = kBatch / dp.size();
    for (int s = from; s < to; ++s) {
      auto [x, y] = GlobalBatch(s);
      opt.ZeroGrad();
      opt.PrepareBackward(true);
      MlpLoss(p, x.narrow(0, dp.rank() * per, per), y.narrow(0, dp.rank() * per, per)).backward();
      opt.Step(MlpLr(s, 4));
    }
  };
  {
    DistributedOptimizer first(Trainable(p, kMlpNames), &dp, nullptr, o);
    train(first, 0, 2);
    checkpoint::CheckpointOptions co;
    co.run_dir = run_;
    co.async = true;
    co.fail_on_error = true;
    checkpoint::Checkpointer ckpt(MPI_COMM_WORLD, co);
    checkpoint::CheckpointState state;
    state.shards = first.StateShards();
    state.optimizer_step = first.step();
    ckpt.Save(first.step(), std::move(state));
    ASSERT_TRUE(ckpt.Wait().committed);
  }
  for (auto& t : p) t.detach().normal_();  // the resumed run must not depend on what the params held
  DistributedOptimizer second(Trainable(p, kMlpNames), &dp, nullptr, o);
  checkpoint::CheckpointReader reader(checkpoint::ResolveResume(run_, "auto"));
  second.LoadState(reader, reader.manifest().step());
  train(second, 2, 4);
  for (size_t i = 0; i < p.size(); ++i) EXPECT_TRUE(p[i].equal(straight.params[i])) << kMlpNames[i];
}

}  // namespace
}  // namespace lcl::optim
