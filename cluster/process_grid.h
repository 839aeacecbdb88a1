// ProcessGrid: world = dp x tp. TP groups are contiguous ranks (so they sit inside one node), DP groups are
// strided: rank = dp_rank * tp + tp_rank. Owns the MPI sub-communicators of both groups.
//
//   ProcessGrid grid(MPI_COMM_WORLD, /*tp=*/2);   // on 4 ranks: TP {0,1} {2,3}, DP {0,2} {1,3}
//   grid.tp_rank(); grid.dp_comm();
#pragma once

#include <mpi.h>

#include <string>

#include "cluster/mpi_comm.h"

namespace lcl::cluster {

// The pure arithmetic of the grid, checked, without MPI (also used to plan resharding).
struct GridShape {
  int world = 1;
  int tp = 1;
  int dp = 1;
  // Throws lcl::ConfigError if tp < 1 or tp does not divide world.
  static GridShape Make(int world, int tp);
  int TpRankOf(int rank) const { return rank % tp; }
  int DpRankOf(int rank) const { return rank / tp; }
  int RankOf(int dp_rank, int tp_rank) const { return dp_rank * tp + tp_rank; }
  std::string ToString() const;
};

class ProcessGrid {
 public:
  ProcessGrid(MPI_Comm world, int tp);
  ProcessGrid(const ProcessGrid&) = delete;
  ProcessGrid& operator=(const ProcessGrid&) = delete;

  const GridShape& shape() const { return shape_; }
  int rank() const { return rank_; }
  int tp() const { return shape_.tp; }
  int dp() const { return shape_.dp; }
  int tp_rank() const { return shape_.TpRankOf(rank_); }
  int dp_rank() const { return shape_.DpRankOf(rank_); }
  MPI_Comm world_comm() const { return world_.get(); }
  MPI_Comm tp_comm() const { return tp_comm_.get(); }
  MPI_Comm dp_comm() const { return dp_comm_.get(); }

 private:
  GridShape shape_;
  int rank_ = 0;
  MpiComm world_;  // a duplicate owned here, so grid traffic never mixes with user traffic
  MpiComm tp_comm_;
  MpiComm dp_comm_;
};

}  // namespace lcl::cluster
