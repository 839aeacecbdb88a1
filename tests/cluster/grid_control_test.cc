// On 4 ranks: DP x TP group semantics, the cluster context, and the rank-0 control plane (gather, broadcast,
// agreement on a flag and on a signal seen by one rank).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <csignal>

#include "cluster/cluster_context.h"
#include "cluster/control.pb.h"
#include "cluster/control_plane.h"
#include "cluster/errors.h"
#include "cluster/mpi_communicator.h"
#include "cluster/process_grid.h"
#include "cluster/signals.h"
#include "tests/test_main.h"

namespace lcl::cluster {
namespace {

int WorldRank() { return lcl::testing::Mpi().rank(); }

// The sum of world ranks over a group tells exactly which ranks are in it.
int SumOfRanks(MPI_Comm group) {
  MpiCommunicator comm(group, "group");
  torch::Tensor t = torch::full({1}, WorldRank(), torch::kInt);
  comm.AllReduce(t, ReduceOp::kSum);
  return t.item<int>();
}

TEST(ProcessGrid, TpGroupsAreContiguousAndDpGroupsStrided) {
  ProcessGrid grid(MPI_COMM_WORLD, /*tp=*/2);
  ASSERT_EQ(grid.dp(), 2);
  const int r = WorldRank();
  EXPECT_EQ(grid.tp_rank(), r % 2);
  EXPECT_EQ(grid.dp_rank(), r / 2);
  // TP {0,1} {2,3}; DP {0,2} {1,3}.
  EXPECT_EQ(SumOfRanks(grid.tp_comm()), r < 2 ? 1 : 5);
  EXPECT_EQ(SumOfRanks(grid.dp_comm()), r % 2 == 0 ? 2 : 4);
  int tp_rank_in_group = -1;
  MPI_Comm_rank(grid.tp_comm(), &tp_rank_in_group);
  EXPECT_EQ(tp_rank_in_group, grid.tp_rank());
}

TEST(ProcessGrid, ExtremeLayoutsHaveOneGroupOrSingletons) {
  ProcessGrid all_tp(MPI_COMM_WORLD, 4);
  EXPECT_EQ(all_tp.dp(), 1);
  EXPECT_EQ(SumOfRanks(all_tp.tp_comm()), 6);
  EXPECT_EQ(SumOfRanks(all_tp.dp_comm()), WorldRank());
  ProcessGrid all_dp(MPI_COMM_WORLD, 1);
  EXPECT_EQ(all_dp.dp(), 4);
  EXPECT_EQ(SumOfRanks(all_dp.dp_comm()), 6);
}

TEST(ProcessGrid, TpThatDoesNotDivideTheWorldFailsOnEveryRank) {
  EXPECT_THROW(ProcessGrid(MPI_COMM_WORLD, 3), ConfigError);
}

TEST(ClusterContext, BuildsCpuCommunicatorsForEachGroup) {
  ClusterOptions opt;
  opt.tp = 2;
  opt.use_cuda = false;
  ClusterContext ctx(lcl::testing::Mpi(), opt);
  EXPECT_EQ(ctx.world().size(), 4);
  EXPECT_EQ(ctx.tp().size(), 2);
  EXPECT_EQ(ctx.dp().size(), 2);
  EXPECT_STREQ(ctx.dp().backend(), "mpi");
  EXPECT_TRUE(ctx.device().is_cpu());
  torch::Tensor t = torch::ones({8});
  ctx.tp().AllReduce(t, ReduceOp::kSum);
  ctx.dp().AllReduce(t, ReduceOp::kSum);
  EXPECT_TRUE(t.eq(4.0f).all().item<bool>());
}

TEST(ControlPlane, RankZeroGathersEveryRanksStatusInRankOrder) {
  ControlPlane control(MPI_COMM_WORLD);
  RankStatus me;
  me.set_rank(control.rank());
  me.set_step(100 + control.rank());
  me.set_payload(std::string(control.rank() * 1000, 'x'));  // different sizes per rank
  std::vector<RankStatus> all = control.Gather(me);
  if (control.rank() == 0) {
    ASSERT_EQ(static_cast<int>(all.size()), 4);
    for (int r = 0; r < 4; ++r) {
      EXPECT_EQ(all[r].rank(), r);
      EXPECT_EQ(all[r].step(), 100 + r);
      EXPECT_EQ(all[r].payload().size(), static_cast<size_t>(r * 1000));
    }
  } else {
    EXPECT_TRUE(all.empty());
  }
}

TEST(ControlPlane, EveryRankReceivesRankZerosDecision) {
  ControlPlane control(MPI_COMM_WORLD);
  Decision d;
  if (control.rank() == 0) {
    d.set_action(Decision::SAVE_AND_EXIT);
    d.set_step(1234);
    d.set_reason("SIGUSR1 on rank 2");
  } else {
    d.set_action(Decision::ABORT);  // overwritten by the broadcast
  }
  control.Broadcast(&d);
  EXPECT_EQ(d.action(), Decision::SAVE_AND_EXIT);
  EXPECT_EQ(d.step(), 1234);
  EXPECT_EQ(d.reason(), "SIGUSR1 on rank 2");
}

TEST(ControlPlane, AFlagRaisedOnOneRankIsSeenByAll) {
  ControlPlane control(MPI_COMM_WORLD);
  EXPECT_FALSE(control.AnyTrue(false));
  EXPECT_TRUE(control.AnyTrue(control.rank() == 2));
  EXPECT_EQ(control.Max(control.rank() * 7), 21);
}

TEST(ControlPlane, ASignalSeenByOneRankIsKnownByAllAtTheSameCall) {
  ControlPlane control(MPI_COMM_WORLD);
  SignalWatcher signals;
  signals.Clear();
  if (control.rank() == 3) std::raise(SIGUSR1);
  // The step boundary: every rank learns the signal in the same call.
  EXPECT_EQ(control.Max(signals.Pending()), SIGUSR1);
  signals.Clear();
  EXPECT_EQ(control.Max(signals.Pending()), 0);
}

}  // namespace
}  // namespace lcl::cluster
